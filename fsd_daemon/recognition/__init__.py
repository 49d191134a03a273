"""What upstream creates and how we recognise it.

``verl``: verl's server forms, GPU holders, roles, modes and metrics switches, one table with the
upstream file beside each entry. ``engines``: what each inference engine exports, release by
release. ``endpoints``: the other metric endpoints of a verl run. ``recognise``: an actor's
name read against those tables (engine, role, replica), used by discovery's pipeline, the GPU
exporter's ownership and config checks alike.
"""
