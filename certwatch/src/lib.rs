//! certwatch
