//! Shared pieces of the sipwall benchmarks.
