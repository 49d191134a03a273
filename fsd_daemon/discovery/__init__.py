"""Discovery sources: each returns plain typed records of what the cluster runs right now.

``ray_state`` lists actors and nodes through Ray's state API (an HTTP client of the dashboard);
``ray_bridge`` resolves what the state API does not carry (a server's HTTP address, a node's
metrics port) through a Ray driver kept in a child process; ``static`` reads the same records
from a JSON file (tests, benchmarks, clusters without Ray).
"""
