//! Graceful stop: SIGTERM or Ctrl-C turn a flag true, so a run or the agent stops
//! between steps and releases its Lease instead of dying mid-step.

/// A flag that turns true on SIGTERM or Ctrl-C.
pub fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            // No handler: never "asked to stop". Dropping `tx` would close the channel, which
            // a waiting `wait_for` reads as a stop, so it is kept alive with the runtime.
            tracing::warn!("cannot install the SIGTERM handler: a stop kills the process mid-step");
            std::future::pending::<()>().await;
            drop(tx);
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("asked to stop: finishing the current step, then releasing the lease");
        let _ = tx.send(true);
    });
    rx
}
