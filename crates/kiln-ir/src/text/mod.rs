//! The `.kir` text format (in progress).
