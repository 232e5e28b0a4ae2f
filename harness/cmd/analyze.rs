//! `coldboot analyze TARGET`: static wait-cycle analysis of the target's units, without
//! booting. Exit 0 when there is no cycle, 1 when there is one, 2 for bad input.

use coldboot::check::analyze;
use coldboot::error::usage;
use coldboot::progress::Waiting;
use coldboot::targets::{self, PrepareOptions, Progress, TargetSpec};

/// Analyse `target`; print the report (or JSON) and return the exit code.
pub async fn run(target: &str, json: bool) -> anyhow::Result<i32> {
    let spec = TargetSpec::parse(target)?;
    let (sources, gates) = match &spec {
        TargetSpec::Recipe { dir, variants } => {
            let waiting = Waiting::new(format!("building {}", dir.display()));
            let opts = PrepareOptions {
                progress: Progress::new(waiting.reporter()),
                ..PrepareOptions::default()
            };
            let image = targets::build_recipe(dir, variants, &opts).await?;
            drop(waiting);
            let tree = image.dir.join(targets::build::UNITS_DIR);
            (targets::unit_tree::load(&tree)?, image.boot_spec().gates)
        }
        TargetSpec::Image { path, .. } => {
            return Err(usage(format!(
                "analyze reads unit files without booting, which needs a recipe: or nix: target; \
                 {} is a prebuilt disk",
                path.display()
            )));
        }
        TargetSpec::Nix { flake, attr } => {
            let waiting = Waiting::new(format!("evaluating {flake}#{attr}"));
            let inputs =
                targets::nix::analyze_inputs(flake, attr, &Progress::new(waiting.reporter()))
                    .await?;
            drop(waiting);
            inputs
        }
    };
    let analysis = analyze::analyze(&sources, &gates);
    if json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
    } else {
        print!("{}", analysis.render(target));
    }
    Ok(if analysis.has_cycle() { 1 } else { 0 })
}
