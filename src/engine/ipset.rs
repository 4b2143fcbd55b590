//! IP address interval sets for egress analysis.
//!
//! The question this module answers is "is this CIDR, minus its excepts, a
//! subset of mainland-China address space?" without ever enumerating
//! addresses. Sets are kept as sorted, disjoint, non-adjacent inclusive ranges
//! of integers ([`RangeSet`]); [`IpSet`] holds one for IPv4 (`u32`) and one
//! for IPv6 (`u128`). The families are never mixed: an IPv4-mapped IPv6
//! address such as `::ffff:1.2.3.4` is an IPv6 address here.
//!
//! Everything is pure: no I/O, no clock, and no panics on any input.

use std::cmp::{max, min};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

// ---------------------------------------------------------------------------
// Integer abstraction
// ---------------------------------------------------------------------------

/// An unsigned integer usable as the element type of a [`RangeSet`].
///
/// Implemented for `u8` (handy for exhaustive tests), `u32` (IPv4) and `u128`
/// (IPv6).
pub trait RangeInt: Copy + Ord + fmt::Debug {
    /// Width in bits.
    const BITS: u32;
    /// The smallest value.
    const ZERO: Self;
    /// The largest value.
    const MAX: Self;
    /// `self + 1`, or `None` at `MAX`.
    fn succ(self) -> Option<Self>;
    /// `self - 1`, or `None` at zero.
    fn pred(self) -> Option<Self>;
    /// `self - other` (wrapping; callers ensure `self >= other`).
    fn diff(self, other: Self) -> Self;
    /// Number of trailing zero bits (`BITS` for zero).
    fn trailing_zeros(self) -> u32;
    /// Number of leading zero bits (`BITS` for zero).
    fn leading_zeros(self) -> u32;
    /// `self` with its lowest `bits` bits set (`bits` is clamped to `BITS`).
    fn fill_low(self, bits: u32) -> Self;
}

macro_rules! impl_range_int {
    ($($t:ty),*) => {$(
        impl RangeInt for $t {
            const BITS: u32 = <$t>::BITS;
            const ZERO: Self = 0;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }
            #[inline]
            fn pred(self) -> Option<Self> {
                self.checked_sub(1)
            }
            #[inline]
            fn diff(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            #[inline]
            fn trailing_zeros(self) -> u32 {
                <$t>::trailing_zeros(self)
            }
            #[inline]
            fn leading_zeros(self) -> u32 {
                <$t>::leading_zeros(self)
            }
            #[inline]
            fn fill_low(self, bits: u32) -> Self {
                if bits >= <$t>::BITS {
                    <$t>::MAX
                } else {
                    self | ((1 << bits) - 1)
                }
            }
        }
    )*};
}

impl_range_int!(u8, u32, u128);

// ---------------------------------------------------------------------------
// RangeSet
// ---------------------------------------------------------------------------

/// A set of integers as sorted, disjoint, non-adjacent inclusive ranges.
///
/// The invariant (for consecutive ranges `a`, `b`: `a.0 <= a.1` and
/// `a.1 + 1 < b.0`) holds after every constructor and operation, so two sets
/// are equal exactly when their range vectors are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RangeSet<T> {
    ranges: Vec<(T, T)>,
}

impl<T> Default for RangeSet<T> {
    fn default() -> Self {
        RangeSet { ranges: Vec::new() }
    }
}

/// Appends `(s, e)` to `out`, merging with the last range when they overlap
/// or touch. Requires `s >= out.last().0` and `s <= e`.
#[inline]
fn push_merge<T: RangeInt>(out: &mut Vec<(T, T)>, s: T, e: T) {
    if let Some(last) = out.last_mut()
        && last.1.succ().is_none_or(|next| s <= next)
    {
        if e > last.1 {
            last.1 = e;
        }
        return;
    }
    out.push((s, e));
}

impl<T: RangeInt> RangeSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from inclusive `(start, end)` ranges in any order,
    /// overlapping or not. Ranges with `start > end` are empty and ignored.
    /// Sorts and merges once: O(n log n).
    pub fn from_ranges<I: IntoIterator<Item = (T, T)>>(ranges: I) -> Self {
        let mut v: Vec<(T, T)> = ranges.into_iter().filter(|&(s, e)| s <= e).collect();
        v.sort_unstable();
        // Merge in place.
        let mut w = 0usize;
        for r in 0..v.len() {
            let (s, e) = v[r];
            if w > 0 {
                let last = &mut v[w - 1];
                if last.1.succ().is_none_or(|next| s <= next) {
                    if e > last.1 {
                        last.1 = e;
                    }
                    continue;
                }
            }
            v[w] = (s, e);
            w += 1;
        }
        v.truncate(w);
        // Sets built here are often kept for the process's life (the
        // mainland data): merging leaves spare capacity, give it back.
        v.shrink_to_fit();
        RangeSet { ranges: v }
    }

    /// The ranges, sorted, disjoint and non-adjacent.
    pub fn ranges(&self) -> &[(T, T)] {
        &self.ranges
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds the inclusive range `start..=end` (nothing if `start > end`).
    /// O(log n + number of ranges it absorbs), plus the `Vec` shift.
    pub fn insert(&mut self, start: T, end: T) {
        if start > end {
            return;
        }
        // First range that is not strictly before-and-apart from `start`.
        let lo = self
            .ranges
            .partition_point(|r| r.1.succ().is_some_and(|next| next < start));
        // One past the last range that starts at or before `end + 1`.
        let hi = self
            .ranges
            .partition_point(|r| end.succ().is_none_or(|next| r.0 <= next));
        if lo >= hi {
            self.ranges.insert(lo, (start, end));
        } else {
            let s = min(start, self.ranges[lo].0);
            let e = max(end, self.ranges[hi - 1].1);
            self.ranges.splice(lo..hi, std::iter::once((s, e)));
        }
    }

    /// Whether `x` is in the set. Binary search.
    pub fn contains(&self, x: T) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < x);
        self.ranges.get(i).is_some_and(|r| r.0 <= x)
    }

    /// Whether the whole range `start..=end` is in the set (true if empty).
    pub fn contains_range(&self, start: T, end: T) -> bool {
        if start > end {
            return true;
        }
        let i = self.ranges.partition_point(|r| r.1 < start);
        self.ranges
            .get(i)
            .is_some_and(|r| r.0 <= start && end <= r.1)
    }

    /// `self ∪ other`, by a linear merge.
    pub fn union(&self, other: &Self) -> Self {
        let (a, b) = (&self.ranges, &other.ranges);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let take_a = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0 <= y.0,
                (Some(_), None) => true,
                _ => false,
            };
            let r = if take_a {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            };
            push_merge(&mut out, r.0, r.1);
        }
        RangeSet { ranges: out }
    }

    /// `self \ other`.
    pub fn subtract(&self, other: &Self) -> Self {
        self.subtract_within(other, usize::MAX)
            .unwrap_or_else(|| RangeSet { ranges: Vec::new() })
    }

    /// `self \ other` when it has at most `limit` ranges, else `None` (found
    /// without building the rest: the complement of a big set in a wide
    /// block is thousands of ranges). Walks `self` merging with `other`,
    /// skipping to each range of `self` by binary search.
    pub fn subtract_within(&self, other: &Self, limit: usize) -> Option<Self> {
        let mut out = Vec::with_capacity(self.ranges.len().min(limit));
        self.subtract_within_into(other, limit, &mut out)
            .then_some(RangeSet { ranges: out })
    }

    /// `self \ other` written into `out` (cleared first), reusing its
    /// allocation: for a set narrowed rule after rule.
    pub fn subtract_into(&self, other: &Self, out: &mut Self) {
        out.ranges.clear();
        self.subtract_within_into(other, usize::MAX, &mut out.ranges);
    }

    /// `self \ other` appended to `out` (empty on entry); false when it
    /// would have more than `limit` ranges (then `out` holds a prefix).
    fn subtract_within_into(&self, other: &Self, limit: usize, out: &mut Vec<(T, T)>) -> bool {
        let b = &other.ranges;
        let mut j = 0usize;
        'outer: for &(s, e) in &self.ranges {
            if out.len() > limit {
                return false;
            }
            // Binary search: `other` is often the mainland set (thousands
            // of ranges) and `self` one block.
            j += b[j..].partition_point(|r| r.1 < s);
            let mut cur = s;
            let mut k = j;
            loop {
                if out.len() > limit {
                    return false;
                }
                match b.get(k) {
                    Some(&(bs, be)) if bs <= e => {
                        if bs > cur
                            && let Some(p) = bs.pred()
                        {
                            out.push((cur, p));
                        }
                        if be >= e {
                            continue 'outer;
                        }
                        match be.succ() {
                            Some(n) => cur = max(cur, n),
                            None => continue 'outer,
                        }
                        k += 1;
                    }
                    _ => {
                        out.push((cur, e));
                        continue 'outer;
                    }
                }
            }
        }
        out.len() <= limit
    }

    /// `self ∩ other`, by a linear merge.
    pub fn intersect(&self, other: &Self) -> Self {
        let (a, b) = (&self.ranges, &other.ranges);
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while let (Some(&(as_, ae)), Some(&(bs, be))) = (a.get(i), b.get(j)) {
            let s = max(as_, bs);
            let e = min(ae, be);
            if s <= e {
                out.push((s, e));
            }
            if ae < be {
                i += 1;
            } else {
                j += 1;
            }
        }
        RangeSet { ranges: out }
    }

    /// Whether every element of `self` is in `other`. Each range of `self`
    /// must lie inside a single range of `other` (they are non-adjacent), found
    /// by binary search over the not-yet-passed part of `other`.
    pub fn is_subset_of(&self, other: &Self) -> bool {
        let b = &other.ranges;
        let mut j = 0usize;
        for &(s, e) in &self.ranges {
            j += b[j..].partition_point(|r| r.1 < s);
            match b.get(j) {
                Some(&(bs, be)) if bs <= s && e <= be => {}
                _ => return false,
            }
        }
        true
    }

    /// Whether `self` and `other` share an element, by a linear merge
    /// that stops at the first overlap (no set is built).
    pub fn intersects(&self, other: &Self) -> bool {
        let (a, b) = (&self.ranges, &other.ranges);
        let (mut i, mut j) = (0, 0);
        while let (Some(&(as_, ae)), Some(&(bs, be))) = (a.get(i), b.get(j)) {
            if max(as_, bs) <= min(ae, be) {
                return true;
            }
            if ae < be {
                i += 1;
            } else {
                j += 1;
            }
        }
        false
    }

    /// The smallest element of `self` that is not in `other`, if any.
    pub fn first_outside(&self, other: &Self) -> Option<T> {
        let b = &other.ranges;
        let mut j = 0usize;
        for &(s, e) in &self.ranges {
            j += b[j..].partition_point(|r| r.1 < s);
            match b.get(j) {
                Some(&(bs, be)) if bs <= s => {
                    if be < e {
                        // be + 1 is in self (ranges are contiguous) and not in
                        // other (its ranges are non-adjacent).
                        return be.succ();
                    }
                }
                _ => return Some(s),
            }
        }
        None
    }

    /// Minimal decomposition into aligned power-of-two blocks, as
    /// `(first element, prefix length)` pairs in ascending order. A prefix
    /// length `p` means a block of `2^(BITS - p)` elements.
    pub fn blocks(&self) -> Vec<(T, u32)> {
        let mut out = Vec::new();
        for &(s, e) in &self.ranges {
            push_blocks(&mut out, s, e);
        }
        out
    }
}

/// Greedy minimal decomposition of `s..=e` (requires `s <= e`) into aligned
/// blocks: at each step take the largest block that starts at `s`, is aligned
/// and does not pass `e`.
fn push_blocks<T: RangeInt>(out: &mut Vec<(T, u32)>, mut s: T, e: T) {
    loop {
        let align = if s == T::ZERO {
            T::BITS
        } else {
            s.trailing_zeros()
        };
        let span = e.diff(s); // element count minus one
        let fit = match span.succ() {
            // count = span + 1 >= 1; the largest k with 2^k <= count.
            Some(count) => T::BITS - 1 - count.leading_zeros(),
            None => T::BITS,
        };
        let k = min(align, fit);
        let block_end = s.fill_low(k);
        out.push((s, T::BITS - k));
        if block_end >= e {
            return;
        }
        match block_end.succ() {
            Some(n) => s = n,
            None => return,
        }
    }
}

/// Whether `start..=end` minus the union of `excepts` is a subset of `of`.
///
/// Allocation-free: walks the gaps between excepts, which costs
/// O(k² + k log m) for k excepts and m ranges in `of`; callers with many
/// excepts should build a [`RangeSet`] instead.
fn range_minus_subset_scan<T, I>(start: T, end: T, excepts: I, of: &RangeSet<T>) -> bool
where
    T: RangeInt,
    I: Iterator<Item = (T, T)> + Clone,
{
    if start > end || of.contains_range(start, end) {
        return true;
    }
    let mut cur = start;
    loop {
        // Is `cur` removed by an except? Jump past the furthest one covering it.
        let covered_to = excepts
            .clone()
            .filter(|&(xs, xe)| xs <= cur && cur <= xe)
            .map(|(_, xe)| xe)
            .max();
        if let Some(xe) = covered_to {
            if xe >= end {
                return true;
            }
            match xe.succ() {
                Some(n) => cur = n,
                None => return true,
            }
            continue;
        }
        // `cur` is kept: everything up to the next except (or `end`) must be
        // inside one range of `of`.
        let next_except = excepts
            .clone()
            .filter(|&(xs, xe)| xs > cur && xs <= xe)
            .map(|(xs, _)| xs)
            .min();
        let seg_end = match next_except.and_then(T::pred) {
            Some(p) => min(p, end),
            None => end,
        };
        if !of.contains_range(cur, seg_end) {
            return false;
        }
        if seg_end >= end {
            return true;
        }
        match seg_end.succ() {
            Some(n) => cur = n,
            None => return true,
        }
    }
}

/// Up to this many excepts the allocation-free scan is used.
const SCAN_EXCEPTS_MAX: usize = 32;

fn range_minus_subset<T, I>(
    start: T,
    end: T,
    excepts: I,
    n_excepts: usize,
    of: &RangeSet<T>,
) -> bool
where
    T: RangeInt,
    I: Iterator<Item = (T, T)> + Clone,
{
    if n_excepts <= SCAN_EXCEPTS_MAX {
        range_minus_subset_scan(start, end, excepts, of)
    } else {
        range_minus_subset_alloc(start, end, excepts, of)
    }
}

fn range_minus_subset_alloc<T, I>(start: T, end: T, excepts: I, of: &RangeSet<T>) -> bool
where
    T: RangeInt,
    I: Iterator<Item = (T, T)>,
{
    if start > end || of.contains_range(start, end) {
        return true;
    }
    let ex = RangeSet::from_ranges(excepts);
    RangeSet::from_ranges([(start, end)])
        .subtract(&ex)
        .is_subset_of(of)
}

// ---------------------------------------------------------------------------
// IpSet
// ---------------------------------------------------------------------------

#[inline]
fn v4_range(n: Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

#[inline]
fn v6_range(n: Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

/// A set of IP addresses (IPv4 and IPv6 kept separately) as sorted, disjoint,
/// non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: RangeSet<u32>,
    v6: RangeSet<u128>,
}

impl IpSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from nets in any order (host bits are ignored).
    /// Collects, sorts and merges once: O(n log n).
    pub fn from_nets<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push(v4_range(n)),
                IpNet::V6(n) => v6.push(v6_range(n)),
            }
        }
        IpSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        }
    }

    /// Adds one net (host bits are ignored).
    pub fn insert_net(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => {
                let (s, e) = v4_range(n);
                self.v4.insert(s, e);
            }
            IpNet::V6(n) => {
                let (s, e) = v6_range(n);
                self.v6.insert(s, e);
            }
        }
    }

    /// The IPv4 part.
    pub fn v4(&self) -> &RangeSet<u32> {
        &self.v4
    }

    /// The IPv6 part.
    pub fn v6(&self) -> &RangeSet<u128> {
        &self.v6
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: self.v4.union(&other.v4),
            v6: self.v6.union(&other.v6),
        }
    }

    /// `self \ other`.
    pub fn subtract(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: self.v4.subtract(&other.v4),
            v6: self.v6.subtract(&other.v6),
        }
    }

    /// `self \ other` when it has at most `max` ranges (IPv4 and IPv6
    /// together), else `None`, without building the rest.
    pub fn subtract_within(&self, other: &IpSet, max: usize) -> Option<IpSet> {
        let v4 = self.v4.subtract_within(&other.v4, max)?;
        let v6 = self.v6.subtract_within(&other.v6, max - v4.len())?;
        Some(IpSet { v4, v6 })
    }

    /// `self ∩ other`.
    pub fn intersect(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: self.v4.intersect(&other.v4),
            v6: self.v6.intersect(&other.v6),
        }
    }

    /// `self \ other` written into `out`, reusing its allocations.
    pub fn subtract_into(&self, other: &IpSet, out: &mut IpSet) {
        self.v4.subtract_into(&other.v4, &mut out.v4);
        self.v6.subtract_into(&other.v6, &mut out.v6);
    }

    /// Whether `self` and `other` share an address.
    pub fn intersects(&self, other: &IpSet) -> bool {
        self.v4.intersects(&other.v4) || self.v6.intersects(&other.v6)
    }

    /// Whether every address of `self` is in `other`.
    pub fn is_subset_of(&self, other: &IpSet) -> bool {
        self.v4.is_subset_of(&other.v4) && self.v6.is_subset_of(&other.v6)
    }

    /// The lowest address in self that is not in `other` (evidence for
    /// messages), if any. IPv4 addresses come before IPv6 ones.
    pub fn first_outside(&self, other: &IpSet) -> Option<IpAddr> {
        if let Some(x) = self.v4.first_outside(&other.v4) {
            return Some(IpAddr::V4(Ipv4Addr::from(x)));
        }
        self.v6
            .first_outside(&other.v6)
            .map(|x| IpAddr::V6(Ipv6Addr::from(x)))
    }

    /// Whether `addr` is in the set. Binary search.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Give back spare capacity (for sets kept for long).
    pub fn shrink_to_fit(&mut self) {
        self.v4.ranges.shrink_to_fit();
        self.v6.ranges.shrink_to_fit();
    }

    /// `(IPv4 ranges, IPv6 ranges)`.
    pub fn range_count(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Minimal CIDR decomposition of the set (for display/evidence), v4 first.
    pub fn to_nets(&self) -> Vec<IpNet> {
        let v4 = self.v4.blocks().into_iter().filter_map(|(s, p)| {
            // p <= 32 by construction, so this never fails.
            u8::try_from(p)
                .ok()
                .and_then(|p| Ipv4Net::new(Ipv4Addr::from(s), p).ok())
                .map(IpNet::V4)
        });
        let v6 = self.v6.blocks().into_iter().filter_map(|(s, p)| {
            u8::try_from(p)
                .ok()
                .and_then(|p| Ipv6Net::new(Ipv6Addr::from(s), p).ok())
                .map(IpNet::V6)
        });
        v4.chain(v6).collect()
    }

    /// Parse a list: one CIDR (or bare address = /32 or /128) per line; '#'
    /// starts a comment (whole-line or trailing); blank lines ignored; an
    /// optional second whitespace-separated token (and anything after it) is
    /// ignored by this fn. Non-canonical CIDRs with host bits set (e.g.
    /// 10.0.0.1/8) are accepted and truncated.
    pub fn parse_list(text: &str) -> Result<IpSet, ListParseError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries(text) {
            let entry = entry?;
            match entry.net {
                IpNet::V4(n) => v4.push(v4_range(n)),
                IpNet::V6(n) => v6.push(v6_range(n)),
            }
        }
        Ok(IpSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        })
    }
}

/// Fast subset check for a single net minus excepts against a set, without
/// allocating when there are few excepts. Equivalent to
/// `IpSet::from_nets([net]).subtract(&IpSet::from_nets(excepts.iter().copied())).is_subset_of(of)`.
/// Excepts of the other address family are irrelevant and ignored.
pub fn net_minus_excepts_subset(net: IpNet, excepts: &[IpNet], of: &IpSet) -> bool {
    match net {
        IpNet::V4(n) => {
            let (s, e) = v4_range(n);
            let ex = excepts.iter().filter_map(|x| match x {
                IpNet::V4(x) => Some(v4_range(*x)),
                IpNet::V6(_) => None,
            });
            range_minus_subset(s, e, ex, excepts.len(), &of.v4)
        }
        IpNet::V6(n) => {
            let (s, e) = v6_range(n);
            let ex = excepts.iter().filter_map(|x| match x {
                IpNet::V6(x) => Some(v6_range(*x)),
                IpNet::V4(_) => None,
            });
            range_minus_subset(s, e, ex, excepts.len(), &of.v6)
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A line of an address list or country table that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending token: the address/CIDR, or for a country-table entry
    /// with a bad country code, the entry's (valid) CIDR.
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for ListParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if parse_net(&self.text).is_ok() {
            // The address itself is fine; the problem is elsewhere on the line
            // (e.g. a country table's country code).
            write!(f, "line {}: {:?}: {}", self.line, self.text, self.reason)
        } else {
            write!(
                f,
                "line {}: {:?} is not an IP address or CIDR: {}",
                self.line, self.text, self.reason
            )
        }
    }
}

impl std::error::Error for ListParseError {}

/// One non-blank line of a list.
struct Entry<'a> {
    line: usize,
    net: IpNet,
    /// The address token as written.
    token: &'a str,
    /// The rest of the line after the token (may still hold a comment).
    rest: &'a str,
}

impl<'a> Entry<'a> {
    /// The second whitespace-separated token, if any.
    fn second(&self) -> Option<&'a str> {
        strip_comment(self.rest).split_whitespace().next()
    }
}

fn strip_comment(s: &str) -> &str {
    match s.split_once('#') {
        Some((before, _)) => before,
        None => s,
    }
}

/// Iterates over the non-blank, non-comment lines of `text`, parsing the
/// first token of each as an address or CIDR.
fn entries(text: &str) -> impl Iterator<Item = Result<Entry<'_>, ListParseError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = i + 1;
        let c = raw.trim_start();
        if c.is_empty() || c.starts_with('#') {
            return None;
        }
        // Fast path for the common plain `a.b.c.d[/len]` token.
        if let Some((net, n)) = parse_v4_plain(c.as_bytes())
            && let Some((token, rest)) = c.split_at_checked(n)
        {
            return Some(Ok(Entry {
                line,
                net,
                token,
                rest,
            }));
        }
        let content = strip_comment(c);
        let end = content.find(char::is_whitespace).unwrap_or(content.len());
        let (token, rest) = content.split_at_checked(end).unwrap_or((content, ""));
        Some(match parse_net(token) {
            Ok(net) => Ok(Entry {
                line,
                net,
                token,
                rest,
            }),
            Err(reason) => Err(ListParseError {
                line,
                text: token.to_owned(),
                reason: reason.to_string(),
            }),
        })
    })
}

/// Reads 1..=`max_digits` ASCII digits at `b[*i..]` as a number.
#[inline]
fn read_decimal(b: &[u8], i: &mut usize, max_digits: usize) -> Option<(u32, usize)> {
    let start = *i;
    let mut v: u32 = 0;
    while let Some(&c) = b.get(*i)
        && c.is_ascii_digit()
        && *i - start < max_digits
    {
        v = v * 10 + u32::from(c - b'0');
        *i += 1;
    }
    let n = *i - start;
    (n > 0).then_some((v, n))
}

/// Strict parser for the common `a.b.c.d` / `a.b.c.d/len` token at the start
/// of `b`, ending at the end of `b`, ASCII whitespace or `#`. Returns the
/// (truncated) net and the token length. `None` means "not this plain form"
/// (leading zeros, out-of-range values, IPv6, garbage, ...): the caller then
/// uses [`parse_net`], which decides and explains. Whenever this returns
/// `Some`, `parse_net` would return the same net.
fn parse_v4_plain(b: &[u8]) -> Option<(IpNet, usize)> {
    let mut i = 0usize;
    let mut octets = [0u8; 4];
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = b.get(i).copied();
        let (v, n) = read_decimal(b, &mut i, 3)?;
        if n > 1 && first == Some(b'0') {
            return None;
        }
        *octet = u8::try_from(v).ok()?;
    }
    let mut len = 32u8;
    if b.get(i) == Some(&b'/') {
        i += 1;
        let (v, _) = read_decimal(b, &mut i, 2)?;
        len = u8::try_from(v).ok().filter(|&l| l <= 32)?;
    }
    match b.get(i) {
        None => {}
        Some(&c) if c.is_ascii_whitespace() || c == b'#' => {}
        Some(_) => return None,
    }
    let net = Ipv4Net::new(Ipv4Addr::from(octets), len).ok()?.trunc();
    Some((IpNet::V4(net), i))
}

/// Why a token is not an address or a CIDR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NetParseError {
    #[error("{0}")]
    Address(#[from] std::net::AddrParseError),
    #[error("invalid prefix length {0:?}")]
    PrefixSyntax(String),
    #[error("prefix length {prefix} exceeds {max}")]
    PrefixTooLong { prefix: String, max: u8 },
    #[error("{0}")]
    Net(#[from] ipnet::PrefixLenError),
}

/// The one CIDR parser of the engine's own inputs (address lists, policies'
/// `allowedCIDRs`, `--cluster-cidr`): `addr` (a single host) or `addr/len`
/// for either family, host bits allowed and dropped. (NetworkPolicy ipBlocks
/// are read as the API server reads them: `network::parse_cidr`.)
pub(crate) fn parse_net(token: &str) -> Result<IpNet, NetParseError> {
    let (addr_text, prefix_text) = match token.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (token, None),
    };
    let addr: IpAddr = addr_text.parse()?;
    let max_len: u8 = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match prefix_text {
        None => max_len,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NetParseError::PrefixSyntax(p.to_string()));
            }
            match p.parse::<u8>() {
                Ok(l) if l <= max_len => l,
                _ => {
                    return Err(NetParseError::PrefixTooLong {
                        prefix: p.to_string(),
                        max: max_len,
                    });
                }
            }
        }
    };
    Ok(IpNet::new(addr, len)?.trunc())
}

// ---------------------------------------------------------------------------
// CountryTable
// ---------------------------------------------------------------------------

/// Country hint table: lines "<CIDR> <CC>"; lookup returns the 2-letter code
/// of the range containing the address. Where entries nest, the most specific
/// (smallest) one wins; for identical nets the later line wins. Codes are
/// stored upper-case.
#[derive(Clone, Debug, Default)]
pub struct CountryTable {
    v4: Vec<(u32, u32, [u8; 2])>,
    v6: Vec<(u128, u128, [u8; 2])>,
}

impl CountryTable {
    /// Parses "<CIDR> <CC>" lines ('#' comments and blank lines as in
    /// [`IpSet::parse_list`]). Anything after the code is ignored.
    pub fn parse(text: &str) -> Result<CountryTable, ListParseError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries(text) {
            let entry = entry?;
            let cc = match entry.second() {
                Some(cc) => match cc.as_bytes() {
                    [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                        [a.to_ascii_uppercase(), b.to_ascii_uppercase()]
                    }
                    _ => {
                        return Err(ListParseError {
                            line: entry.line,
                            text: entry.token.to_owned(),
                            reason: format!(
                                "invalid country code {cc:?} (expected two ASCII letters)"
                            ),
                        });
                    }
                },
                None => {
                    return Err(ListParseError {
                        line: entry.line,
                        text: entry.token.to_owned(),
                        reason: "missing country code".to_owned(),
                    });
                }
            };
            match entry.net {
                IpNet::V4(n) => {
                    let (s, e) = v4_range(n);
                    v4.push((s, e, cc));
                }
                IpNet::V6(n) => {
                    let (s, e) = v6_range(n);
                    v6.push((s, e, cc));
                }
            }
        }
        Ok(CountryTable {
            v4: flatten_nested(v4),
            v6: flatten_nested(v6),
        })
    }

    /// The country code of the most specific entry containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&str> {
        let cc = match addr {
            IpAddr::V4(a) => lookup_in(&self.v4, u32::from(a)),
            IpAddr::V6(a) => lookup_in(&self.v6, u128::from(a)),
        }?;
        std::str::from_utf8(cc).ok()
    }

    /// Number of disjoint ranges `(IPv4, IPv6)` after flattening.
    pub fn range_count(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

fn lookup_in<T: RangeInt>(segs: &[(T, T, [u8; 2])], x: T) -> Option<&[u8; 2]> {
    let i = segs.partition_point(|r| r.1 < x);
    segs.get(i).filter(|r| r.0 <= x).map(|r| &r.2)
}

/// Turns a laminar family of ranges (any two are nested or disjoint, as CIDRs
/// are) into sorted disjoint segments labelled by the innermost range, merging
/// touching segments with the same label.
fn flatten_nested<T: RangeInt>(mut items: Vec<(T, T, [u8; 2])>) -> Vec<(T, T, [u8; 2])> {
    // Outer ranges first; stable so that, for identical ranges, later lines
    // end up innermost.
    items.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(T, T, [u8; 2])> = Vec::with_capacity(items.len());
    let mut emit = |s: T, e: T, cc: [u8; 2]| {
        if let Some(last) = out.last_mut()
            && last.2 == cc
            && last.1.succ() == Some(s)
        {
            last.1 = e;
        } else {
            out.push((s, e, cc));
        }
    };
    // Stack of open ranges (end, code); `cursor` is the first position not yet
    // emitted (None once past T::MAX).
    let mut stack: Vec<(T, [u8; 2])> = Vec::new();
    let mut cursor: Option<T> = Some(T::ZERO);
    for (s, e, cc) in items {
        while let Some(&(te, tcc)) = stack.last() {
            if te >= s {
                break;
            }
            if let Some(c) = cursor
                && c <= te
            {
                emit(c, te, tcc);
            }
            cursor = te.succ();
            stack.pop();
        }
        if let Some(&(_, tcc)) = stack.last()
            && let Some(c) = cursor
            && c < s
            && let Some(p) = s.pred()
        {
            emit(c, p, tcc);
        }
        cursor = Some(s);
        stack.push((e, cc));
    }
    while let Some((te, tcc)) = stack.pop() {
        if let Some(c) = cursor
            && c <= te
        {
            emit(c, te, tcc);
        }
        cursor = te.succ();
    }
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A CIDR as the API server reads one in a NetworkPolicy (Go's
/// `ParseCIDRSloppy`): an address, `/` and a prefix length, leading zeros
/// in IPv4 octets allowed; host bits are dropped. A bare address is not a
/// CIDR here.
pub(crate) fn parse_cidr(text: &str) -> Option<IpNet> {
    let (addr, len) = text.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let addr: IpAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) if addr.contains('.') && !addr.contains(':') => {
            // 010.001.0.0: Go reads the octets as decimal.
            let octets: Vec<u8> = addr
                .split('.')
                .map(|o| {
                    if o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()) {
                        None
                    } else {
                        o.parse().ok()
                    }
                })
                .collect::<Option<_>>()?;
            let octets: [u8; 4] = octets.try_into().ok()?;
            IpAddr::from(octets)
        }
        Err(_) => return None,
    };
    IpNet::new(addr, len).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // ----- naive model on u8 -----

    type Bits = [bool; 256];

    fn bits_of_ranges(ranges: &[(u8, u8)]) -> Bits {
        let mut b = [false; 256];
        for &(s, e) in ranges {
            for x in s..=e {
                b[x as usize] = true;
            }
        }
        b
    }

    fn bits_of(set: &RangeSet<u8>) -> Bits {
        bits_of_ranges(set.ranges())
    }

    fn assert_invariant<T: RangeInt>(set: &RangeSet<T>) {
        let r = set.ranges();
        for x in r {
            assert!(x.0 <= x.1, "empty range {x:?} in {r:?}");
        }
        for w in r.windows(2) {
            let next = w[0].1.succ().expect("a range ending at MAX must be last");
            assert!(next < w[1].0, "overlapping or adjacent {w:?} in {r:?}");
        }
    }

    fn arb_ranges() -> impl Strategy<Value = Vec<(u8, u8)>> {
        let len = prop_oneof![0u8..=8, 0u8..=64, any::<u8>()];
        prop::collection::vec((any::<u8>(), len), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(s, l)| (s, s.saturating_add(l)))
                .collect()
        })
    }

    fn arb_set() -> impl Strategy<Value = RangeSet<u8>> {
        arb_ranges().prop_map(RangeSet::from_ranges)
    }

    /// Excepts/nets under 10.0.0.0/24 with prefixes 24..=32 (host bits random).
    fn arb_region_net() -> impl Strategy<Value = IpNet> {
        (any::<u8>(), 24u8..=32).prop_map(|(host, p)| {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, host), p).unwrap())
        })
    }

    fn region_bits(nets: &[IpNet]) -> Bits {
        let mut b = [false; 256];
        for n in nets {
            if let IpNet::V4(n) = n {
                let (s, e) = v4_range(*n);
                for x in s..=e {
                    if x & 0xffff_ff00 == 0x0a00_0000 {
                        b[(x & 0xff) as usize] = true;
                    }
                }
            }
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn from_ranges_and_insert_match_model(ranges in arb_ranges()) {
            let set = RangeSet::from_ranges(ranges.iter().copied());
            assert_invariant(&set);
            prop_assert_eq!(bits_of(&set), bits_of_ranges(&ranges));
            let mut inc = RangeSet::new();
            for &(s, e) in &ranges {
                inc.insert(s, e);
                assert_invariant(&inc);
            }
            prop_assert_eq!(&inc, &set);
            prop_assert_eq!(set.is_empty(), !bits_of(&set).iter().any(|&x| x));
        }

        #[test]
        fn union_matches_model(a in arb_set(), b in arb_set()) {
            let u = a.union(&b);
            assert_invariant(&u);
            let (ma, mb) = (bits_of(&a), bits_of(&b));
            let want: Vec<bool> = (0..256).map(|i| ma[i] || mb[i]).collect();
            prop_assert_eq!(bits_of(&u).to_vec(), want);
            prop_assert_eq!(&u, &b.union(&a));
        }

        #[test]
        fn subtract_matches_model(a in arb_set(), b in arb_set()) {
            let d = a.subtract(&b);
            assert_invariant(&d);
            let (ma, mb) = (bits_of(&a), bits_of(&b));
            let want: Vec<bool> = (0..256).map(|i| ma[i] && !mb[i]).collect();
            prop_assert_eq!(bits_of(&d).to_vec(), want);
        }

        #[test]
        fn subtract_within_is_subtract_or_too_many(a in arb_set(), b in arb_set(), limit in 0usize..8) {
            let full = a.subtract(&b);
            match a.subtract_within(&b, limit) {
                Some(d) => {
                    prop_assert_eq!(&d, &full);
                    prop_assert!(full.len() <= limit);
                }
                None => prop_assert!(full.len() > limit),
            }
        }

        #[test]
        fn subtract_into_and_intersects_match_model(a in arb_set(), b in arb_set(), junk in arb_set()) {
            // `out` starts with other contents: they must not leak through.
            let mut out = junk;
            a.subtract_into(&b, &mut out);
            assert_invariant(&out);
            prop_assert_eq!(&out, &a.subtract(&b));
            let (ma, mb) = (bits_of(&a), bits_of(&b));
            let overlap = (0..256).any(|i| ma[i] && mb[i]);
            prop_assert_eq!(a.intersects(&b), overlap);
            prop_assert_eq!(b.intersects(&a), overlap);
        }

        #[test]
        fn intersect_matches_model(a in arb_set(), b in arb_set()) {
            let x = a.intersect(&b);
            assert_invariant(&x);
            let (ma, mb) = (bits_of(&a), bits_of(&b));
            let want: Vec<bool> = (0..256).map(|i| ma[i] && mb[i]).collect();
            prop_assert_eq!(bits_of(&x).to_vec(), want);
            prop_assert_eq!(&x, &b.intersect(&a));
        }

        #[test]
        fn subset_and_first_outside_match_model(a in arb_set(), b in arb_set(), c in arb_set()) {
            let (ma, mb) = (bits_of(&a), bits_of(&b));
            let first = (0..256usize).find(|&i| ma[i] && !mb[i]).map(|i| i as u8);
            prop_assert_eq!(a.first_outside(&b), first);
            prop_assert_eq!(a.is_subset_of(&b), first.is_none());
            // Subsets built by construction.
            let sub = a.intersect(&c);
            prop_assert!(sub.is_subset_of(&a));
            prop_assert!(a.is_subset_of(&a.union(&c)));
            prop_assert_eq!(sub.first_outside(&a), None);
        }

        #[test]
        fn contains_matches_model(a in arb_set()) {
            let m = bits_of(&a);
            for x in 0..=255u8 {
                prop_assert_eq!(a.contains(x), m[x as usize]);
                prop_assert_eq!(a.contains_range(x, x), m[x as usize]);
            }
        }

        #[test]
        fn contains_range_matches_model(a in arb_set(), s in any::<u8>(), e in any::<u8>()) {
            let m = bits_of(&a);
            let want = s > e || (s..=e).all(|x| m[x as usize]);
            prop_assert_eq!(a.contains_range(s, e), want);
        }

        #[test]
        fn blocks_are_exact_and_minimal(a in arb_set()) {
            let blocks = a.blocks();
            let mut cover = [false; 256];
            for &(s, p) in &blocks {
                let k = 8 - p;
                prop_assert!(p <= 8);
                prop_assert!(k == 8 || (s as u32).is_multiple_of(1 << k), "unaligned block {s}/{p}");
                for x in (s as u32)..(s as u32 + (1u32 << k)) {
                    prop_assert!(!cover[x as usize], "blocks overlap");
                    cover[x as usize] = true;
                }
            }
            let m = bits_of(&a);
            prop_assert_eq!(cover, m);
            // The minimal decomposition is exactly the maximal aligned blocks
            // inside the set: count them by brute force.
            let inside = |s: u32, k: u32| (s..s + (1 << k)).all(|x| m[x as usize]);
            let mut maximal = 0;
            for k in 0..=8u32 {
                for s in (0..256u32).step_by(1 << k) {
                    let parent_inside = k < 8 && inside(s & !((1 << (k + 1)) - 1), k + 1);
                    if inside(s, k) && !parent_inside {
                        maximal += 1;
                    }
                }
            }
            prop_assert_eq!(blocks.len(), maximal);
        }

        #[test]
        fn scan_and_alloc_match_model(
            s in any::<u8>(), e in any::<u8>(), ex in arb_ranges(), of in arb_set()
        ) {
            let mut m = [false; 256];
            if s <= e {
                for x in s..=e { m[x as usize] = true; }
            }
            for (x, bit) in bits_of_ranges(&ex).iter().enumerate() {
                if *bit { m[x] = false; }
            }
            let mo = bits_of(&of);
            let want = (0..256).all(|i| !m[i] || mo[i]);
            prop_assert_eq!(range_minus_subset_scan(s, e, ex.iter().copied(), &of), want);
            prop_assert_eq!(range_minus_subset_alloc(s, e, ex.iter().copied(), &of), want);
        }

        #[test]
        fn scan_at_exact_boundaries(
            s in any::<u8>(), e in any::<u8>(), ex in arb_ranges(), hole in any::<u8>()
        ) {
            // `of` is exactly the result, then the result with one point
            // removed: every boundary of the gap walk is exercised.
            let exact = RangeSet::from_ranges([(s, e)]).subtract(&RangeSet::from_ranges(ex.iter().copied()));
            prop_assert!(range_minus_subset_scan(s, e, ex.iter().copied(), &exact));
            prop_assert!(range_minus_subset_alloc(s, e, ex.iter().copied(), &exact));
            let holed = exact.subtract(&RangeSet::from_ranges([(hole, hole)]));
            let want = !exact.contains(hole);
            prop_assert_eq!(range_minus_subset_scan(s, e, ex.iter().copied(), &holed), want);
            prop_assert_eq!(range_minus_subset_alloc(s, e, ex.iter().copied(), &holed), want);
            // Removing the first point of each kept range must fail.
            for &(rs, _) in exact.ranges() {
                let holed = exact.subtract(&RangeSet::from_ranges([(rs, rs)]));
                prop_assert!(!range_minus_subset_scan(s, e, ex.iter().copied(), &holed));
            }
            for &(_, re) in exact.ranges() {
                let holed = exact.subtract(&RangeSet::from_ranges([(re, re)]));
                prop_assert!(!range_minus_subset_scan(s, e, ex.iter().copied(), &holed));
            }
        }

        #[test]
        fn net_minus_excepts_subset_matches_model(
            n in arb_region_net(),
            excepts in prop::collection::vec(arb_region_net(), 0..48),
            of_nets in prop::collection::vec(arb_region_net(), 0..24),
            extra_v6 in any::<bool>(),
        ) {
            let mut excepts = excepts;
            let mut of_nets = of_nets;
            if extra_v6 {
                // Other-family entries must not matter.
                excepts.push(net("::/0"));
                of_nets.push(net("2001:db8::/32"));
            }
            let of = IpSet::from_nets(of_nets.iter().copied());
            let mut m = region_bits(&[n]);
            for (x, bit) in region_bits(&excepts).iter().enumerate() {
                if *bit { m[x] = false; }
            }
            let mo = region_bits(&of_nets);
            let want = (0..256).all(|i| !m[i] || mo[i]);
            let via_sets = IpSet::from_nets([n])
                .subtract(&IpSet::from_nets(excepts.iter().copied()))
                .is_subset_of(&of);
            prop_assert_eq!(via_sets, want);
            prop_assert_eq!(net_minus_excepts_subset(n, &excepts, &of), want);
        }

        #[test]
        fn ipset_nets_round_trip(nets in prop::collection::vec(
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap())),
            0..12,
        )) {
            let set = IpSet::from_nets(nets.iter().copied());
            assert_invariant(set.v4());
            let back = IpSet::from_nets(set.to_nets());
            prop_assert_eq!(&back, &set);
            let mut inc = IpSet::new();
            for n in &nets {
                inc.insert_net(*n);
            }
            prop_assert_eq!(&inc, &set);
        }

        #[test]
        fn plain_v4_fast_path_agrees_with_general_parser(
            token in prop_oneof![
                "[0-9./]{1,20}",
                "0?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,4}(/0?[0-9]{1,2})?",
                (any::<[u8; 4]>(), 0u8..=40).prop_map(|(a, p)| format!("{}/{p}", Ipv4Addr::from(a))),
            ],
            tail in prop_oneof![Just(""), Just(" CN"), Just("\tx"), Just("#c"), Just("x"), Just("/1")],
        ) {
            let line = format!("{token}{tail}");
            let first = strip_comment(&line).split_whitespace().next().unwrap_or("");
            let general = parse_net(first);
            if let Some((fast, n)) = parse_v4_plain(line.as_bytes()) {
                prop_assert_eq!(n, first.len());
                prop_assert_eq!(&general, &Ok(fast));
            }
            // Whatever path is taken, a list line means the same thing.
            match IpSet::parse_list(&line) {
                Ok(set) => prop_assert_eq!(Ok(set), general.map(|n| IpSet::from_nets([n]))),
                Err(e) => {
                    prop_assert_eq!(Err(e.reason), general.map_err(|e| e.to_string()));
                }
            }
        }

        #[test]
        fn parse_never_panics(text in "[0-9a-f:./# \n\t]{0,64}") {
            let _ = IpSet::parse_list(&text);
            let _ = CountryTable::parse(&text);
        }
    }

    // ----- unit tests -----

    /// One parser reads every address and CIDR the engine is given: the
    /// address lists, policies' `allowedCIDRs` and `--cluster-cidr`. A bare
    /// address is one host; host bits are dropped; what the API server's
    /// `isCIDR` refuses (leading zeros in an octet) is refused.
    #[test]
    fn one_parser_for_addresses_and_cidrs() {
        let net = |s: &str| parse_net(s).map(|n| n.to_string());
        assert_eq!(net("203.0.113.7"), Ok("203.0.113.7/32".into()));
        assert_eq!(net("203.0.113.7/24"), Ok("203.0.113.0/24".into()));
        assert_eq!(net("240e::/20"), Ok("240e::/20".into()));
        assert_eq!(net("2001:db8::1"), Ok("2001:db8::1/128".into()));
        for bad in [
            "01.2.3.4/8",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/x",
            "",
            "cn",
        ] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_mixed_families() {
        let set = IpSet::parse_list(
            "1.0.1.0/24\n\
             2001:db8::/32\n\
             1.0.2.0/23\n\
             240e::/20\n",
        )
        .unwrap();
        assert_eq!(set.range_count(), (1, 2));
        assert!(set.contains(ip("1.0.3.255")));
        assert!(!set.contains(ip("1.0.4.0")));
        assert!(!set.contains(ip("1.0.0.255")));
        assert!(set.contains(ip("2001:db8:ffff::1")));
        assert!(set.contains(ip("240e:fff::1")));
        assert!(!set.contains(ip("240e:1000::")));
        // Families are separate: an IPv4-mapped address is IPv6.
        assert!(!set.contains(ip("::ffff:1.0.1.1")));
        assert_eq!(
            set.to_nets(),
            vec![
                net("1.0.1.0/24"),
                net("1.0.2.0/23"),
                net("2001:db8::/32"),
                net("240e::/20")
            ]
        );
    }

    #[test]
    fn whole_address_spaces() {
        let all = IpSet::parse_list("0.0.0.0/0\n::/0").unwrap();
        assert_eq!(all.range_count(), (1, 1));
        assert_eq!(all.v4().ranges(), &[(0, u32::MAX)]);
        assert_eq!(all.v6().ranges(), &[(0, u128::MAX)]);
        assert!(all.contains(ip("255.255.255.255")));
        assert!(all.contains(ip("0.0.0.0")));
        assert!(all.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert_eq!(all.to_nets(), vec![net("0.0.0.0/0"), net("::/0")]);

        let top = IpSet::from_nets([net("255.255.255.255/32"), net("ffff::/16")]);
        let rest = all.subtract(&top);
        assert_eq!(rest.v4().ranges(), &[(0, u32::MAX - 1)]);
        assert!(!rest.contains(ip("255.255.255.255")));
        assert_eq!(rest.union(&top), all);
        assert_eq!(rest.intersect(&top), IpSet::new());
        assert_eq!(all.first_outside(&rest), Some(ip("255.255.255.255")));
        assert_eq!(all.first_outside(&all), None);
        assert!(rest.is_subset_of(&all));
        assert!(!all.is_subset_of(&rest));
        assert_eq!(
            rest.to_nets().len(),
            32 + 16,
            "0/0 minus one /32 is 32 nets; ::/0 minus a /16 is 16"
        );

        // Adjacent halves at the top merge into one range.
        let halves = IpSet::from_nets([net("128.0.0.0/1"), net("0.0.0.0/1")]);
        assert_eq!(halves.v4().ranges(), &[(0, u32::MAX)]);
        let mut inc = IpSet::new();
        inc.insert_net(net("255.255.255.255/32"));
        inc.insert_net(net("0.0.0.0/1"));
        inc.insert_net(net("128.0.0.0/1"));
        assert_eq!(inc.v4().ranges(), &[(0, u32::MAX)]);

        assert!(net_minus_excepts_subset(
            net("0.0.0.0/0"),
            &[net("0.0.0.0/1"), net("128.0.0.0/1")],
            &IpSet::new()
        ));
        assert!(net_minus_excepts_subset(net("::/0"), &[], &all));
        assert!(!net_minus_excepts_subset(
            net("::/0"),
            &[net("::/1")],
            &IpSet::from_nets([net("8000::/2")])
        ));
        assert!(net_minus_excepts_subset(
            net("::/0"),
            &[net("::/1")],
            &IpSet::from_nets([net("8000::/2"), net("c000::/2")])
        ));
    }

    #[test]
    fn comments_bare_addresses_and_host_bits() {
        let text = "# mainland list\n\
                    \n\
                    \t  \n\
                    10.0.0.1/8   # host bits set\n\
                    192.168.1.1\n\
                    2001:db8::1   CN\n\
                    172.16.0.0/12 CN # both\n\
                    #10.0.0.0/8\n\
                    \r\n\
                    100.64.0.0/10\r\n";
        let set = IpSet::parse_list(text).unwrap();
        assert_eq!(
            set.to_nets(),
            vec![
                net("10.0.0.0/8"),
                net("100.64.0.0/10"),
                net("172.16.0.0/12"),
                net("192.168.1.1/32"),
                net("2001:db8::1/128"),
            ]
        );
        assert!(IpSet::parse_list("").unwrap().is_empty());
        assert!(IpSet::parse_list("# only\n\n").unwrap().is_empty());
        assert!(
            IpSet::parse_list("\u{feff}1.2.3.4\n")
                .unwrap()
                .contains(ip("1.2.3.4"))
        );
    }

    #[test]
    fn error_line_numbers_and_messages() {
        let err = IpSet::parse_list("1.0.0.0/8\n# c\n\n300.1.2.3/8 CN\n").unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(err.text, "300.1.2.3/8");
        assert_eq!(
            err.to_string(),
            "line 4: \"300.1.2.3/8\" is not an IP address or CIDR: invalid IP address syntax"
        );

        let cases = [
            ("1.2.3.4/33", "prefix length 33 exceeds 32"),
            ("::/129", "prefix length 129 exceeds 128"),
            ("1.2.3.4/", "invalid prefix length \"\""),
            ("1.2.3.4/+8", "invalid prefix length \"+8\""),
            ("1.2.3.4/8/8", "invalid prefix length \"8/8\""),
            ("1.2.3.4/1000", "invalid prefix length \"1000\""),
            ("/8", "invalid IP address syntax"),
            ("example.com", "invalid IP address syntax"),
            ("fe80::1%eth0", "invalid IP address syntax"),
        ];
        for (i, (bad, reason)) in cases.iter().enumerate() {
            let text = format!("10.0.0.0/8\n{bad}\n");
            let err = IpSet::parse_list(&text).unwrap_err();
            assert_eq!(err.line, 2, "{bad}");
            assert_eq!(err.text, *bad);
            assert_eq!(err.reason, *reason, "case {i}: {bad}");
            assert!(err.to_string().starts_with("line 2: "), "{err}");
        }
        let e: Box<dyn std::error::Error> = Box::new(err);
        assert!(e.to_string().contains("line 4"));
    }

    #[test]
    fn to_nets_is_minimal() {
        let set = IpSet::from_nets([net("10.0.1.0/24"), net("10.0.0.0/24")]);
        assert_eq!(set.range_count(), (1, 0));
        assert_eq!(set.to_nets(), vec![net("10.0.0.0/23")]);

        let r = RangeSet::from_ranges([(
            u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            u32::from(Ipv4Addr::new(10, 0, 0, 6)),
        )]);
        let set = IpSet {
            v4: r,
            v6: RangeSet::new(),
        };
        assert_eq!(
            set.to_nets(),
            vec![
                net("10.0.0.1/32"),
                net("10.0.0.2/31"),
                net("10.0.0.4/31"),
                net("10.0.0.6/32")
            ]
        );
        for n in set.to_nets() {
            assert_eq!(n, n.trunc(), "canonical");
        }
        assert_eq!(IpSet::new().to_nets(), vec![]);
    }

    #[test]
    fn first_outside_examples() {
        let cn = IpSet::parse_list("1.0.1.0/24\n1.0.2.0/23\n240e::/20").unwrap();
        let probe = IpSet::from_nets([net("1.0.0.0/22")]);
        assert_eq!(probe.first_outside(&cn), Some(ip("1.0.0.0")));
        let probe = IpSet::from_nets([net("1.0.1.0/24"), net("1.0.2.0/23"), net("1.0.4.0/30")]);
        assert_eq!(probe.first_outside(&cn), Some(ip("1.0.4.0")));
        let probe = IpSet::from_nets([net("1.0.2.128/25"), net("240e::/16")]);
        assert_eq!(probe.first_outside(&cn), Some(ip("240e:1000::")));
        let probe = IpSet::from_nets([net("1.0.2.128/25"), net("240e:abc::/32")]);
        assert_eq!(probe.first_outside(&cn), None);
        assert!(probe.is_subset_of(&cn));
        assert_eq!(IpSet::new().first_outside(&cn), None);
        assert_eq!(
            cn.first_outside(&IpSet::new()),
            Some(ip("1.0.1.0")),
            "v4 before v6"
        );

        // The fast path agrees.
        assert!(!net_minus_excepts_subset(net("1.0.0.0/22"), &[], &cn));
        assert!(net_minus_excepts_subset(
            net("1.0.0.0/22"),
            &[net("1.0.0.0/24")],
            &cn
        ));
        assert!(net_minus_excepts_subset(
            net("1.0.0.0/16"),
            &[
                net("1.0.0.0/24"),
                net("1.0.4.0/22"),
                net("1.0.8.0/21"),
                net("1.0.16.0/20"),
                net("1.0.32.0/19"),
                net("1.0.64.0/18"),
                net("1.0.128.0/17")
            ],
            &cn
        ));
    }

    #[test]
    fn country_table_lookup() {
        let table = CountryTable::parse(
            "# cidr cc\n\
             1.0.0.0/8 cn\n\
             1.2.3.0/24 HK  # more specific wins\n\
             1.2.3.4/32 MO\n\
             1.255.0.0/16 CN\n\
             8.8.8.0/24 US\n\
             240e::/20 CN\n\
             ::/0 ZZ\n",
        )
        .unwrap();
        assert_eq!(table.lookup(ip("1.0.0.0")), Some("CN"));
        assert_eq!(table.lookup(ip("1.2.2.255")), Some("CN"));
        assert_eq!(table.lookup(ip("1.2.3.3")), Some("HK"));
        assert_eq!(table.lookup(ip("1.2.3.4")), Some("MO"));
        assert_eq!(table.lookup(ip("1.2.3.5")), Some("HK"));
        assert_eq!(table.lookup(ip("1.2.4.0")), Some("CN"));
        assert_eq!(table.lookup(ip("1.255.255.255")), Some("CN"));
        assert_eq!(table.lookup(ip("2.0.0.0")), None);
        assert_eq!(table.lookup(ip("8.8.8.8")), Some("US"));
        assert_eq!(table.lookup(ip("240e::1")), Some("CN"));
        assert_eq!(table.lookup(ip("2001:db8::1")), Some("ZZ"));
        assert_eq!(
            table.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some("ZZ")
        );
        // 1/8 splits into CN | HK | MO | HK | CN; 1.255/16 merges into the last CN.
        assert_eq!(table.range_count(), (6, 3));

        let dup = CountryTable::parse("10.0.0.0/8 AA\n10.0.0.0/8 BB\n0.0.0.0/0 XX\n").unwrap();
        assert_eq!(dup.lookup(ip("10.1.2.3")), Some("BB"));
        assert_eq!(dup.lookup(ip("255.255.255.255")), Some("XX"));
        assert_eq!(dup.lookup(ip("0.0.0.0")), Some("XX"));
        assert_eq!(CountryTable::default().lookup(ip("1.1.1.1")), None);

        let err = CountryTable::parse("1.0.0.0/8 CN\n\n1.2.0.0/16 CHN\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.to_string(),
            "line 3: \"1.2.0.0/16\": invalid country code \"CHN\" (expected two ASCII letters)"
        );
        let err = CountryTable::parse("1.0.0.0/8\n").unwrap_err();
        assert_eq!(err.reason, "missing country code");
        let err = CountryTable::parse("1.0.0.0/8 C1\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = CountryTable::parse("1.0.0.0/88 CN\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: \"1.0.0.0/88\" is not an IP address or CIDR: prefix length 88 exceeds 32"
        );
    }
}
