//! JSON output of a graph (in progress).
