#!/usr/bin/env python3
"""The affinity binary API through VPP's Python client (vpp_papi):
papi_check.py API_SOCKET JSON_DIR... ; prints what it saw, exits 1 on a miss."""
import glob
import sys

from vpp_papi import VPPApiClient

sock, dirs = sys.argv[1], sys.argv[2:]
jsons = [f for d in dirs for f in glob.glob(f"{d}/**/*.api.json", recursive=True)]
vpp = VPPApiClient(apifiles=jsons, server_address=sock)
vpp.connect("affinity-e2e")
fixed = vpp.api.affinity_fixed_dump(max_entries=1000)
wild = vpp.api.affinity_wildcard_dump()
counters = {c.name: c.value for c in vpp.api.affinity_counter_dump()}
rv = vpp.api.affinity_set_control(agent_address="192.0.2.1", listen_port=1637, multicast_group="239.255.16.37").retval
vpp.disconnect()
ok = len(wild) > 0 and len(fixed) > 0 and counters.get("punted", 0) > 0 and rv == 0
print(f"{len(wild)} wildcards, {len(fixed)} fixed affinities (first {fixed[0].src_address}:{fixed[0].src_port} -> {fixed[0].dst_address}:{fixed[0].dst_port}), punted={counters.get('punted')}, set_control retval {rv}" if fixed else f"{len(wild)} wildcards, no fixed affinities, counters {len(counters)}")
sys.exit(0 if ok else 1)
