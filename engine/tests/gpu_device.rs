//! GPU checks that need a real NVIDIA GPU. They are ignored by default (CI has no GPU) and run
//! on a GPU machine with `cargo test -p drover-engine --release --test gpu_device -- --ignored`.

use drover_engine::gpu::{burn, discover, driver_present, free_mem_gb, BurnRequest, GpuError};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn discovers_the_gpus_with_their_memory() {
    assert!(driver_present(), "the CUDA driver library loads");
    let gpus = discover().expect("discovery");
    assert!(!gpus.is_empty(), "at least one GPU");
    for gpu in &gpus {
        println!("{gpu:?}");
        assert!(!gpu.name.is_empty());
        assert!(gpu.total_mem_gb >= 8.0, "{gpu:?}");
        assert!(gpu.free_mem_gb > 0.0 && gpu.free_mem_gb <= gpu.total_mem_gb);
        assert!(gpu.compute_capability.0 >= 7, "{gpu:?}");
    }
    let free = free_mem_gb(0).expect("free memory of GPU 0");
    assert!(free as f64 <= gpus[0].total_mem_gb);
    assert!(matches!(
        free_mem_gb(gpus.len()),
        Err(GpuError::NoSuchGpu { .. })
    ));
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn burn_holds_memory_moves_data_and_verifies_it() {
    let request = BurnRequest {
        ordinals: vec![0],
        mem_gb: 4.0,
        duration: Duration::from_secs(2),
    };
    let report = burn(&request, &AtomicBool::new(false)).expect("burn");
    println!("{report:?}");
    assert!(!report.stopped);
    assert!(report.seconds >= 2.0);
    assert!(report.bytes_copied >= 4 << 30, "at least one full pass");
    assert!(
        report.gb_per_s > 50.0,
        "device-to-device copies run at GPU speed: {report:?}"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn asking_for_more_memory_than_the_gpu_has_is_out_of_memory() {
    let total = discover().unwrap()[0].total_mem_gb;
    let request = BurnRequest {
        ordinals: vec![0],
        mem_gb: total * 2.0,
        duration: Duration::from_secs(1),
    };
    match burn(&request, &AtomicBool::new(false)) {
        Err(GpuError::OutOfMemory {
            ordinal: 0,
            needed_gb,
            free_gb,
        }) => {
            assert_eq!(needed_gb, (total * 2.0).ceil() as u32);
            assert!((free_gb as f64) <= total);
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    // The failed allocation released what it held: a fitting request runs.
    let fits = BurnRequest {
        ordinals: vec![0],
        mem_gb: 1.0,
        duration: Duration::from_millis(100),
    };
    assert!(burn(&fits, &AtomicBool::new(false)).is_ok());
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_stopped_attempt_ends_early() {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let setter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let request = BurnRequest {
        ordinals: vec![0],
        mem_gb: 1.0,
        duration: Duration::from_secs(30),
    };
    let report = burn(&request, &stop).expect("burn");
    setter.join().unwrap();
    assert!(report.stopped && report.seconds < 5.0, "{report:?}");
}

#[test]
fn without_a_driver_burn_says_so() {
    if driver_present() {
        return;
    }
    let request = BurnRequest {
        ordinals: vec![0],
        mem_gb: 1.0,
        duration: Duration::from_millis(1),
    };
    assert_eq!(
        burn(&request, &AtomicBool::new(false)),
        Err(GpuError::NoDriver)
    );
}
