"""Discovery sources: each returns plain typed records of what the cluster runs right now
(recognising which records are rollout servers is ``fsd_daemon.recognition``'s job).

``ray_state`` lists actors and nodes through Ray's state API (``ray_http``: plain HTTP to the
dashboard, no Ray in this process; ``ray_auth``: Ray's token auth decided as Ray's CLI does);
``ray_bridge`` resolves what the state API does not carry (a server's HTTP address, a node's
metrics port) through a Ray driver kept in a child process; ``static`` reads the same records
from a JSON file (tests, benchmarks, clusters without Ray).
"""
