//! Capabilities, dropped for the work that does not need them: the root side holds
//! `CAP_NET_ADMIN` only around `nft`, and reads tailscaled on a thread without any.

/// Runs the future `f` makes on a thread of its own that holds no capability (it stays uid 0,
/// which tailscaled's LocalAPI checks): reading and parsing tailscaled's answers needs root's
/// uid, not `CAP_NET_ADMIN`.
pub(crate) async fn unprivileged<T, Fut>(
    f: impl FnOnce() -> Fut + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    without_capabilities(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(f())
    })
    .await?
}

async fn without_capabilities<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: valid header and two data structs, as capset(2) takes for version 3; it acts on
        // this thread only.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
        let out = if rc == 0 {
            Ok(f())
        } else {
            Err(format!(
                "dropping capabilities: {}",
                std::io::Error::last_os_error()
            ))
        };
        let _ = tx.send(out);
    });
    rx.await.map_err(|_| "the netmap thread died".to_owned())?
}
