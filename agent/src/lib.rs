//! affinity-agent
