//! Helpers for tests that need real processes: a throwaway `redis-server` or Redis Cluster on
//! a free port, TLS certificates from a private CA. Production code never uses this module.

pub mod certs;
pub mod redis;

pub use self::certs::make_test_certs;
pub use self::redis::{RedisCluster, RedisServer, TlsFiles};
