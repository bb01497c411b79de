//! The signals `claimrules serve` answers: SIGINT and SIGTERM shut it down gracefully, SIGHUP
//! reloads the rules.

use claimrules::rules::HotRules;

/// Reloads the rules (on a blocking thread) at every SIGHUP; nothing on other platforms.
pub fn reload_rules_on_sighup(rules: HotRules) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let r = rules.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
}

/// Registers the shutdown signals now (before the banner tells anyone the server is up, so an
/// early Ctrl-C is never lost) and resolves when one arrives.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {},
                        _ = t.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
