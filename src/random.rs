//! Randomness from the kernel (getrandom(2)): the one place provd mints secrets (install
//! tokens, NoCloud seed tokens) and random identifiers (VM MACs).
//!
//! getrandom(2) needs no file descriptor (works when the process is out of them, or in a
//! chroot without /dev) and blocks only until the kernel's pool is first initialised.

/// Fill `buf` with random bytes. Panics only if the kernel refuses (it never does on the
/// kernels provd supports; a provisioning server must not run without randomness).
pub fn fill(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, which is valid for writes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EINTR), "getrandom: {e}");
            continue;
        }
        done += n as usize;
    }
}

/// A secret for a URL or a header: 128 random bits, lowercase hex (32 characters).
pub fn token() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let (a, b) = (super::token(), super::token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn fill_covers_large_buffers() {
        // Larger than one getrandom call may return for an uninitialised pool (256 bytes).
        let mut buf = vec![0u8; 4096];
        super::fill(&mut buf);
        assert!(buf.iter().filter(|b| **b == 0).count() < 200, "not left zeroed");
    }
}
