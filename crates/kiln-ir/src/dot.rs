//! Graphviz DOT output of a graph (in progress).
