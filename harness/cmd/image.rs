//! `coldboot image build`: build a recipe image or find it in the cache.

use std::collections::BTreeMap;
use std::path::Path;

use coldboot::progress::Waiting;
use coldboot::targets::{self, PrepareOptions, Progress};

/// Build `recipe_dir` with the given `K=V` variants; print the image id and paths.
pub async fn build(recipe_dir: &Path, variants: &[String]) -> anyhow::Result<i32> {
    let mut chosen = BTreeMap::new();
    for v in variants {
        let (k, val) = targets::parse_variant_arg(v)?;
        chosen.insert(k, val);
    }
    let waiting = Waiting::new(format!("building {}", recipe_dir.display()));
    let opts = PrepareOptions {
        progress: Progress::new(waiting.reporter()),
        ..PrepareOptions::default()
    };
    let image = targets::build_recipe(recipe_dir, &chosen, &opts).await?;
    drop(waiting);
    let how = if image.cache_hit { "cached" } else { "built" };
    println!("id:      {}", image.id);
    println!("disk:    {}", image.disk.display());
    println!("kernel:  {}", image.kernel.display());
    println!("initrd:  {}", image.initrd.display());
    println!(
        "variants: {}",
        image
            .meta
            .variants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{how} in {:.2}s", image.elapsed.as_secs_f64());
    Ok(0)
}
