"""One pass from discovered records to target files: reconcile -> render -> write.

``reconcile`` decides what each file should hold, ``render`` turns targets into canonical
file_sd bytes, ``poll`` runs the pass against a discovery source and the atomic writer, and
``selfmetrics`` holds what the pass records about itself (the service serves it). Nothing here
owns a thread, a signal or a socket; ``fsd_daemon.service`` runs the pass on a schedule.
"""
