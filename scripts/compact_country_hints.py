#!/usr/bin/env python3
"""Compact data/country-hints.cidrs for embedding.

Country hints are evidence in messages ("8.8.8.8 is registered to US"), never
part of the decision (data/mainland-china.cidrs decides). The full table is
hundreds of thousands of lines because location feeds split networks finely.
This keeps Hong Kong, Macau and Taiwan exact (the look-alikes that matter
most next to mainland China) and coarsens every other country to the country
that holds most of the hinted addresses in each IPv4 /16 and IPv6 /32 block
(only when it holds at least MIN_SHARE of them), then merges adjacent blocks.

usage: compact_country_hints.py IN OUT
"""
import ipaddress
import sys
from collections import defaultdict

EXACT = {"HK", "MO", "TW"}
V4_BLOCK, V6_BLOCK = 16, 32
MIN_SHARE = 0.9


def main(src, dst):
    header, exact, share = [], [], {4: defaultdict(lambda: defaultdict(int)), 6: defaultdict(lambda: defaultdict(int))}
    with open(src) as f:
        for line in f:
            if line.startswith("#"):
                header.append(line.rstrip("\n"))
                continue
            parts = line.split()
            if len(parts) != 2:
                continue
            net, cc = ipaddress.ip_network(parts[0]), parts[1]
            if cc in EXACT:
                exact.append((net, cc))
                continue
            block = V4_BLOCK if net.version == 4 else V6_BLOCK
            if net.prefixlen >= block:
                key = int(net.supernet(new_prefix=block).network_address)
                share[net.version][key][cc] += net.num_addresses
            else:
                for sub in net.subnets(new_prefix=block):
                    share[net.version][int(sub.network_address)][cc] += sub.num_addresses
    coarse = []
    for version, blocks in share.items():
        block = V4_BLOCK if version == 4 else V6_BLOCK
        size = 1 << ((32 if version == 4 else 128) - block)
        runs = []  # merge adjacent blocks of one country
        for start in sorted(blocks):
            counts = blocks[start]
            cc, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
            if n < MIN_SHARE * sum(counts.values()):
                continue
            if runs and runs[-1][2] == cc and runs[-1][1] == start:
                runs[-1][1] = start + size
            else:
                runs.append([start, start + size, cc])
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        for start, end, cc in runs:
            for net in ipaddress.summarize_address_range(cls(start), cls(end - 1)):
                coarse.append((net, cc))
    rows = sorted(exact + coarse, key=lambda r: (r[0].version, int(r[0].network_address), r[0].prefixlen))
    v4 = sum(1 for n, _ in rows if n.version == 4)
    with open(dst, "w") as out:
        for h in header:
            if h.startswith("# Format:"):
                break
            out.write(h + "\n")
        out.write("# Compacted by scripts/compact_country_hints.py: HK, MO and TW exact; other countries\n")
        out.write(f"#   coarsened to the dominant country (>= {MIN_SHARE:.0%} of hinted addresses) per IPv4 /{V4_BLOCK}\n")
        out.write(f"#   and IPv6 /{V6_BLOCK} block. Evidence for messages only; the more specific entry wins.\n")
        out.write(f"# Format: '<CIDR> <ISO-3166 country code>', {v4} IPv4 lines then {len(rows) - v4} IPv6 lines.\n")
        for net, cc in rows:
            out.write(f"{net} {cc}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
