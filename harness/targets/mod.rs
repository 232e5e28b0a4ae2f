//! Where a bootable system comes from: a Debian recipe built into a cached image, a
//! prebuilt image, or a NixOS flake ([`nix`]). Everything ends as a [`BootSpec`], which
//! is all the VM layer needs to know about a target.
//!
//! Files:
//! - `adapter`: the harness adapter every recipe image gets, and the neutral defaults
//!   it starts from
//! - `build`: the two-stage image build
//! - `cache`: the build cache
//! - `cache_tests`: tests of `cache`
//! - `check`: targets checked before anything runs
//! - `evict`: removing cache entries no run used for a while (`coldboot gc --images`)
//! - `gate`: health gates a target declares
//! - `integrity`: checksums of a cache entry's files, checked before the entry is used
//! - `nix`: nixOS flake targets
//! - `nix_host`: what this host can do with `nix:` targets, for `coldboot doctor`
//! - `nix_wrapper`: where the wrapper flake (the repository's `nix/` folder) is at run
//!   time
//! - `recipe`: the recipe file (`vm-images/NAME/recipe.yaml`)
//! - `recipe_tests`: tests of `recipe`
//! - `rootfs`: writing into an unpacked guest root filesystem from the host without
//!   escaping it
//! - `tool`: running the external build tools, their output kept in the build log
//! - `unit_tree`: reading a root filesystem's unit folders into `UnitSources`
//! - `units`: enabling systemd units inside an unpacked root filesystem

mod adapter;
pub mod build;
pub mod cache;
pub mod check;
pub mod evict;
pub mod gate;
pub mod integrity;
pub mod nix;
pub mod nix_host;
pub mod nix_wrapper;
pub mod recipe;
mod rootfs;
mod tool;
pub mod unit_tree;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{infra, usage};
pub use build::ImageMeta;
pub use gate::{Gate, GateDecl};
pub use recipe::{Fault, Recipe};
// Target strings are part of the plan language (plans name targets), so they are parsed
// in scenario/; they are re-exported here, where they are resolved.
pub use crate::scenario::target_spec::{TargetSpec, parse_variant_arg};

/// The base kernel command line of a recipe image (its root filesystem is labelled `root`).
pub const BASE_CMDLINE: [&str; 3] = ["root=LABEL=root", "rw", "console=ttyS0"];

/// A sink for progress messages during long waits (an image build takes about a minute).
/// Every message is also logged with `tracing`.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<ProgressFn>>);

/// The callback behind [`Progress`].
type ProgressFn = dyn Fn(&str) + Send + Sync;

impl Progress {
    /// Send messages to `f` (for example an indicatif spinner's `set_message`).
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(f)))
    }
    /// Report one step.
    pub fn report(&self, msg: &str) {
        tracing::info!(target: "coldboot::targets", "{msg}");
        if let Some(f) = &self.0 {
            f(msg);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(sink)"
        } else {
            "Progress(none)"
        })
    }
}

/// Options for [`prepare`] and [`build_recipe`].
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Cache root; default `$COLDBOOT_CACHE_DIR`, else `~/.cache/coldboot`.
    pub cache_dir: Option<PathBuf>,
    /// Debian mirror; default `$COLDBOOT_DEBIAN_MIRROR`, else deb.debian.org.
    pub mirror: Option<String>,
    /// Where progress messages go.
    pub progress: Progress,
}

impl PrepareOptions {
    fn mirror(&self) -> String {
        self.mirror
            .clone()
            .or_else(|| {
                std::env::var("COLDBOOT_DEBIAN_MIRROR")
                    .ok()
                    .filter(|m| !m.is_empty())
            })
            .unwrap_or_else(|| cache::DEFAULT_MIRROR.to_string())
    }
}

/// What a target was, for evidence: enough to rebuild it or check it is the same.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetIdentity {
    /// An image built from a recipe.
    Recipe {
        /// The recipe folder (absolute).
        dir: PathBuf,
        /// The image key: a hash of the recipe folder, variants, packages and builder.
        hash: String,
        /// The fully resolved variants.
        variants: BTreeMap<String, String>,
        /// The base image.
        image: PathBuf,
        /// SHA-256 of the base image, recorded when it was built.
        image_sha256: String,
    },
    /// A prebuilt image.
    Image {
        /// The base image (absolute).
        image: PathBuf,
        /// SHA-256 of the base image now.
        image_sha256: String,
    },
    /// A NixOS configuration of a flake (see [`nix`]).
    Nix {
        /// The flake reference as given (a local path made absolute).
        flake: String,
        /// The configuration's name under `nixosConfigurations`.
        name: String,
        /// The flake's locked URL (`nix flake metadata`).
        locked_url: String,
        /// The flake's revision, when it is a clean git tree.
        revision: Option<String>,
        /// The locked source's `narHash`.
        nar_hash: Option<String>,
        /// The last commit's time (seconds since the epoch).
        last_modified: Option<u64>,
        /// The system that boots: the VM's `system` link (`VM/system`, the toplevel of the
        /// VM's own configuration, not of the outer one).
        system: PathBuf,
        /// The VM's store path (`config.system.build.vm`).
        vm: PathBuf,
        /// The runner script that was started.
        runner: PathBuf,
    },
}

/// How a target is started.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Launch {
    /// The harness runs QEMU itself on a throwaway overlay of a base image.
    Qemu {
        /// Base qcow2; never written, always used through an overlay.
        disk: PathBuf,
        /// Kernel for direct boot, when there is one.
        kernel: Option<PathBuf>,
        /// Initrd for direct boot.
        initrd: Option<PathBuf>,
    },
    /// NixOS's own runner (`bin/run-HOSTNAME-vm` of `system.build.vm`), driven through
    /// its environment; it makes a fresh disk in the run folder (`NIX_DISK_IMAGE`).
    NixRunner {
        /// The runner script.
        runner: PathBuf,
        /// The system's kernel (`VM/system/kernel`), for the accelerator probe.
        probe_kernel: Option<PathBuf>,
    },
}

/// Everything needed to boot a target.
#[derive(Debug, Clone, Serialize)]
pub struct BootSpec {
    /// How the target is started.
    pub launch: Launch,
    /// Base kernel arguments (`root=LABEL=root rw console=ttyS0` and the recipe's own).
    /// Empty for a NixOS runner, which writes its own before `QEMU_KERNEL_PARAMS`.
    pub cmdline: Vec<String>,
    /// What the target is, for evidence.
    pub identity: TargetIdentity,
    /// Faults that scenarios may inject, by name.
    pub faults: BTreeMap<String, Fault>,
    /// The health gates the target declares (see [`gate`]); empty when it declares none.
    pub gates: Vec<Gate>,
    /// The target's `redact:` patterns (a recipe's; empty for other targets).
    pub redact: Vec<String>,
}

impl BootSpec {
    /// The base image the VM runs on through an overlay, if there is one.
    pub fn base_disk(&self) -> Option<&Path> {
        match &self.launch {
            Launch::Qemu { disk, .. } => Some(disk),
            Launch::NixRunner { .. } => None,
        }
    }

    /// A kernel that the accelerator probe can boot, if the target has one.
    pub fn probe_kernel(&self) -> Option<&Path> {
        match &self.launch {
            Launch::Qemu { kernel, .. } => kernel.as_deref(),
            Launch::NixRunner { probe_kernel, .. } => probe_kernel.as_deref(),
        }
    }
}

/// A recipe image in the cache, as `coldboot image build` reports it.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image id (its cache key).
    pub id: String,
    /// The cache entry folder.
    pub dir: PathBuf,
    /// `dir/disk.qcow2`.
    pub disk: PathBuf,
    /// `dir/vmlinuz`.
    pub kernel: PathBuf,
    /// `dir/initrd.img`.
    pub initrd: PathBuf,
    /// True when the image was already in the cache and no build work was done.
    pub cache_hit: bool,
    /// How long this call took.
    pub elapsed: Duration,
    /// The recipe it came from.
    pub recipe: Recipe,
    /// The entry's metadata (checksum, kernel release, resolved variants, ...).
    pub meta: ImageMeta,
}

impl BuiltImage {
    /// The boot spec for this image.
    pub fn boot_spec(&self) -> BootSpec {
        let mut cmdline: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
        cmdline.extend(self.recipe.kernel_args.iter().cloned());
        BootSpec {
            launch: Launch::Qemu {
                disk: self.disk.clone(),
                kernel: Some(self.kernel.clone()),
                initrd: Some(self.initrd.clone()),
            },
            cmdline,
            identity: TargetIdentity::Recipe {
                dir: self.meta.recipe_dir.clone(),
                hash: self.id.clone(),
                variants: self.meta.variants.clone(),
                image: self.disk.clone(),
                image_sha256: self.meta.disk_sha256.clone(),
            },
            faults: self.recipe.faults.clone(),
            gates: self.recipe.gates(&self.meta.variants),
            redact: self.recipe.redact.clone(),
        }
    }
}

/// Every file the image is made from: the recipe folder's, then each `overlays:`
/// folder's under `overlays/N/` (its place in the list, so the same files elsewhere give
/// the same key, and a change in a shared folder makes a new image).
pub fn image_entries(recipe: &Recipe) -> anyhow::Result<Vec<cache::RecipeEntry>> {
    let mut entries = cache::recipe_entries(&recipe.dir)?;
    for (i, extra) in recipe.overlays.iter().enumerate() {
        for mut e in cache::recipe_entries(extra)? {
            e.rel = format!("overlays/{i}/{}", e.rel);
            entries.push(e);
        }
    }
    Ok(entries)
}

/// Build (or find in the cache) the image of the recipe in `dir` with the user's variant
/// choices. A cache hit reads two small files and hashes the recipe folder: no build work.
pub async fn build_recipe(
    dir: &Path,
    variants: &BTreeMap<String, String>,
    opts: &PrepareOptions,
) -> anyhow::Result<BuiltImage> {
    let started = Instant::now();
    let recipe = Recipe::load(dir)?;
    let resolved = recipe.resolve_variants(variants)?;
    let mirror = opts.mirror();
    let cache_root = cache::cache_root(opts.cache_dir.as_deref())?;
    let rootfs_key = cache::rootfs_key(&recipe.suite, &recipe.packages, &mirror);
    let key = cache::image_key(&rootfs_key, &image_entries(&recipe)?, &resolved);
    let (entry, cache_hit) = cache::get_or_fill(&cache_root, cache::Kind::Image, &key, |out| {
        let (recipe, resolved, key, mirror) = (&recipe, &resolved, &key, &mirror);
        let cache_root = &cache_root;
        async move {
            let stage1 = build::Stage1 {
                cache: cache_root,
                mirror,
                progress: &opts.progress,
            };
            let (tarball, rootfs_key, _) = build::ensure_rootfs(recipe, &stage1).await?;
            build::build_image(
                recipe,
                resolved,
                &tarball,
                &rootfs_key,
                key,
                &out,
                &opts.progress,
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let meta = build::read_image_meta(&entry)?;
    if cache_hit {
        opts.progress
            .report(&format!("image {} found in the cache", short(&key)));
    } else {
        opts.progress.report(&format!(
            "image {} built in {:.1}s",
            short(&key),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(BuiltImage {
        id: key,
        disk: entry.join(build::DISK_FILE),
        kernel: entry.join(build::KERNEL_FILE),
        initrd: entry.join(build::INITRD_FILE),
        dir: entry,
        cache_hit,
        elapsed: started.elapsed(),
        recipe,
        meta,
    })
}

/// Turn a target into something bootable, building a recipe image if needed.
pub async fn prepare(spec: &TargetSpec, opts: &PrepareOptions) -> anyhow::Result<BootSpec> {
    // Bad input is a usage error here, before a build or a boot can fail on it.
    check::check(spec)?;
    match spec {
        TargetSpec::Recipe { dir, variants } => {
            Ok(build_recipe(dir, variants, opts).await?.boot_spec())
        }
        TargetSpec::Image {
            path,
            kernel,
            initrd,
            root,
        } => {
            prepare_image(
                path,
                kernel.as_deref(),
                initrd.as_deref(),
                root.as_deref(),
                opts,
            )
            .await
        }
        TargetSpec::Nix { flake, attr } => {
            nix::prepare(&nix::NixTarget::new(flake, attr)?, &opts.progress).await
        }
    }
}

/// A prebuilt image: check the files exist and record the disk's checksum.
async fn prepare_image(
    path: &Path,
    kernel: Option<&Path>,
    initrd: Option<&Path>,
    root: Option<&str>,
    opts: &PrepareOptions,
) -> anyhow::Result<BootSpec> {
    let existing = |what: &str, p: &Path| -> anyhow::Result<PathBuf> {
        if p.is_file() {
            Ok(std::path::absolute(p)?)
        } else {
            Err(usage(format!(
                "image target: {what} {} does not exist",
                p.display()
            )))
        }
    };
    let disk = existing("disk", path)?;
    let kernel = kernel.map(|k| existing("kernel", k)).transpose()?;
    let initrd = initrd.map(|i| existing("initrd", i)).transpose()?;
    let cmdline = match &kernel {
        Some(_) => {
            let root = format!("root={}", root.unwrap_or("LABEL=root"));
            vec![root, "rw".into(), "console=ttyS0".into()]
        }
        None => Vec::new(),
    };
    opts.progress
        .report(&format!("checksumming {}", disk.display()));
    let d = disk.clone();
    let image_sha256 = tokio::task::spawn_blocking(move || cache::sha256_file(&d))
        .await
        .map_err(|e| infra(format!("checksum task failed: {e}")))??;
    Ok(BootSpec {
        identity: TargetIdentity::Image {
            image: disk.clone(),
            image_sha256,
        },
        launch: Launch::Qemu {
            disk,
            kernel,
            initrd,
        },
        cmdline,
        faults: BTreeMap::new(),
        gates: Vec::new(),
        redact: Vec::new(),
    })
}

/// The first 12 characters of an id, for messages.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
