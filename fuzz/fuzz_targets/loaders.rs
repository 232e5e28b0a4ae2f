//! Fuzz the three file loaders a user feeds the harness: scenario, plan and recipe.
//! The first byte picks the loader, the rest is the file. Every input must end in a
//! value or in diagnostics with a line and a column, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // Invalid UTF-8 is refused by the file reader before any parser sees it (tested in
    // tests/bad_input.rs); the parsers take text.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // A folder that does not exist: a plan's scenario paths resolve to nothing readable.
    let dir = Path::new("/nonexistent/coldboot-fuzz");
    match which % 3 {
        0 => {
            let file = dir.join("scenario.yaml");
            if let Err(diags) = coldboot::scenario::parse_scenario(&file, text) {
                let shown = coldboot::scenario::diag::into_usage_error(&diags).to_string();
                assert!(!diags.is_empty() && !shown.is_empty());
            }
        }
        1 => {
            let file = dir.join("plans/plan.yaml");
            if let Err(diags) = coldboot::scenario::parse_plan(&file, text) {
                let shown = coldboot::scenario::diag::into_usage_error(&diags).to_string();
                assert!(!diags.is_empty() && !shown.is_empty());
            }
        }
        _ => {
            let file = dir.join("recipe.yaml");
            match coldboot::targets::Recipe::parse(dir, &file, text) {
                // A valid recipe must also resolve its defaults and give its gates.
                Ok(recipe) => {
                    if let Ok(resolved) = recipe.resolve_variants(&Default::default()) {
                        let _ = recipe.variant_files(&resolved);
                        let _ = recipe.gates(&resolved);
                    }
                }
                Err(e) => assert!(e.to_string().starts_with(&file.display().to_string())),
            }
        }
    }
});
