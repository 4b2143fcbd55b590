//! `Shared<T>`: evidence built once and cited by many verdicts.

use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Evidence built once and shared by every verdict that cites it: the
/// texts of a compiled NetworkPolicy (the effective egress of a pod selected
/// by many policies would otherwise copy hundreds of strings per
/// evaluation), and each inventory node's description (a workload governed
/// by five policies lists the same 20 outside nodes five times).
/// Reads, prints and serializes as the `T` it holds.
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared<T: ?Sized>(Arc<T>);

// By hand: a derived Clone would ask `T: Clone`, which `str` is not.
impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }
}

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (*self.0).fmt(f)
    }
}

impl<T: ?Sized + std::fmt::Display> std::fmt::Display for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (*self.0).fmt(f)
    }
}

impl<T: ?Sized + Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(serializer)
    }
}

impl From<String> for Shared<str> {
    fn from(s: String) -> Self {
        Shared(s.into())
    }
}

impl From<&str> for Shared<str> {
    fn from(s: &str) -> Self {
        Shared(s.into())
    }
}

impl<T> From<Vec<T>> for Shared<[T]> {
    fn from(v: Vec<T>) -> Self {
        Shared(v.into())
    }
}

impl PartialEq<str> for Shared<str> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Shared<str> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Shared<str> {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}
