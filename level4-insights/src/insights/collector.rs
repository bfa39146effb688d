//! The collector: a companion measuring every database on an interval.
//! (Stub: H2 builds it.)

use shared::capability::{Companion, CompanionContext, CompanionRun};

/// The collector companion.
pub fn companion() -> Companion {
    Companion {
        name: "insights-collector",
        run,
    }
}

fn run(context: CompanionContext) -> CompanionRun {
    Box::pin(async move {
        context.shutdown.cancelled().await;
        Ok(())
    })
}
