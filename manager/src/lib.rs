//! affinity-manager
