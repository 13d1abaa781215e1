//! Helpers for tests that need real processes: a throwaway `redis-server` or Redis Cluster on
//! a free port. Production code never uses this module.

pub mod redis;

pub use self::redis::{RedisCluster, RedisServer};
