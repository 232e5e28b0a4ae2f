//! Faults: named by a scenario's phases, defined (as a command) by the target, and run
//! in the guest when their phase says so.

use crate::error::{infra, usage};
use crate::guest::Guest;
use crate::scenario::RunPair;

use super::context::PairContext;

/// Run fault `name` of the pair's target in the guest.
pub(super) async fn inject_fault(
    ctx: &PairContext,
    guest: &Guest,
    name: &str,
) -> anyhow::Result<()> {
    let fault = ctx.spec.faults.get(name).ok_or_else(|| {
        usage(format!(
            "target {} defines no fault {name:?}",
            ctx.pair.target
        ))
    })?;
    (ctx.status)(&format!("injecting fault {name}"));
    let out = guest.exec(&fault.run).await?;
    if out.status != 0 {
        return Err(infra(format!(
            "fault {name} (`{}`) exited {}: {}",
            fault.run,
            out.status,
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Every fault a scenario names must exist on the target, before anything boots: a usage
/// error at the line that names the first missing one.
pub fn check_faults(pair: &RunPair, faults: &[&str]) -> anyhow::Result<()> {
    for phase in &pair.scenario.phases {
        for r in &phase.fault_refs {
            if !faults.contains(&r.name.as_str()) {
                return Err(usage(format!(
                    "{}:{}:{}: phase {:?} names fault {:?}, which target {} does not define (it defines: {})",
                    pair.scenario.path.display(),
                    r.line,
                    r.col,
                    phase.name,
                    r.name,
                    pair.target,
                    if faults.is_empty() {
                        "none".to_string()
                    } else {
                        faults.join(", ")
                    }
                )));
            }
        }
    }
    Ok(())
}
