//! drover-sim: runs Drover's engine under virtual time, with seeded faults.

pub mod scenario;
