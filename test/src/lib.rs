//! affinity-lab
