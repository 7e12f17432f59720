//! Allocator settings for the `ffc` and `ffc-bench` processes.
//!
//! Every pass of a training step allocates the same buffers again: the `[batch, Q]` cosine
//! matrix, its gradient, and the backbone's activations. glibc serves blocks at or above its mmap
//! threshold with fresh mappings. That threshold starts at 128 KiB and rises up to 32 MiB as
//! such blocks are freed. glibc also gives the top of its heap back to the kernel once more than
//! twice the threshold is free there. Either way the next pass touches new pages, and the kernel
//! faults them in and zeroes them one 4 KiB page at a time.
//!
//! [`retain_freed_buffers`] fixes both thresholds, so blocks up to 32 MiB come from the heap and
//! freed memory stays with the process for the next pass, which allocates the same sizes again.
//! Blocks above 32 MiB (the cosine matrix at Q = 100 000 and beyond) are still mapped one by one,
//! as glibc allows no larger threshold.

/// The largest mmap threshold glibc accepts on 64-bit targets.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the top of the heap that glibc keeps rather than returning it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 256 << 20;

/// Keeps freed buffers of up to 32 MiB in the process for reuse (see the module docs).
///
/// Call it early in `main`, before any thread allocates. Returns whether both settings took
/// effect: false on targets other than Linux with glibc, where it changes nothing, and false
/// when glibc rejects a setting.
pub fn retain_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and changes allocator parameters only. Both values
        // lie within the ranges that mallopt(3) gives for 64-bit targets.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn thread_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given, and RUSAGE_THREAD exists since Linux
        // 2.6.26.
        #[allow(unsafe_code)]
        let usage = unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
            usage.assume_init()
        };
        usage.ru_minflt
    }

    /// Allocates and fills a 4 MiB block, as one pass's cosine matrix at Q = 10 000, and
    /// returns the page faults this took.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn faults_of_one_buffer(fill: u8) -> i64 {
        let before = thread_faults();
        let block = std::hint::black_box(vec![fill; 4 << 20]);
        let after = thread_faults();
        drop(block);
        after - before
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_buffers_are_reused_without_page_faults() {
        assert!(retain_freed_buffers(), "glibc rejected the thresholds");
        let first = faults_of_one_buffer(1);
        let second = faults_of_one_buffer(2);
        let third = faults_of_one_buffer(3);
        // 4 MiB is 1 024 pages: the first block faults most of them in, the later ones reuse it.
        assert!(first >= 512, "the first block took only {first} faults");
        assert!(second + third < 64, "reused blocks took {second} and {third} faults");
    }
}
