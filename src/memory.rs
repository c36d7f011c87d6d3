//! How the process asks the kernel for memory.

/// Keeps the kernel from backing this process's memory with transparent huge pages, unless
/// `allowed`. With the kernel's `madvise` or `always` policy, the allocator's arenas were
/// backed by 2 MiB pages of which a replica touches a few kilobytes each: about 16 MiB of
/// resident memory that no request used. The setting holds for the whole process, the ONNX
/// Runtime's own allocations included, and for memory mapped before the call.
pub fn huge_pages(allowed: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(!allowed)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
    Ok(())
}
