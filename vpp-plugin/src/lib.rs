//! affinity-plugin
