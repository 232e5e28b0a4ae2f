use super::*;

fn pkgs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn entry(rel: &str, mode: u32, content: &str) -> RecipeEntry {
    RecipeEntry {
        rel: rel.into(),
        mode,
        content: content.as_bytes().to_vec(),
    }
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rootfs_key_is_stable_and_order_insensitive() {
    let a = rootfs_key(
        "bookworm",
        &pkgs(&["dbus", "openssh-server"]),
        DEFAULT_MIRROR,
    );
    let b = rootfs_key(
        "bookworm",
        &pkgs(&["openssh-server", "dbus", "dbus"]),
        DEFAULT_MIRROR,
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
    assert_eq!(
        a,
        rootfs_key(
            "bookworm",
            &pkgs(&["dbus", "openssh-server"]),
            DEFAULT_MIRROR
        )
    );
}

#[test]
fn rootfs_key_changes_with_packages_suite_and_mirror() {
    let base = rootfs_key(
        "bookworm",
        &pkgs(&["dbus", "openssh-server"]),
        DEFAULT_MIRROR,
    );
    let more = rootfs_key(
        "bookworm",
        &pkgs(&["dbus", "openssh-server", "curl"]),
        DEFAULT_MIRROR,
    );
    let suite = rootfs_key("trixie", &pkgs(&["dbus", "openssh-server"]), DEFAULT_MIRROR);
    let mirror = rootfs_key(
        "bookworm",
        &pkgs(&["dbus", "openssh-server"]),
        "http://m/debian",
    );
    let joined = rootfs_key("bookworm", &pkgs(&["dbusopenssh-server"]), DEFAULT_MIRROR);
    for other in [&more, &suite, &mirror, &joined] {
        assert_ne!(&base, other);
    }
}

#[test]
fn image_key_changes_with_files_modes_and_variants() {
    let files = vec![
        entry("recipe.yaml", 0o100644, "suite: x"),
        entry("overlay/etc/a", 0o100644, "1"),
    ];
    let v = vars(&[("gate", "self")]);
    let base = image_key("R", &files, &v);
    assert_eq!(base, image_key("R", &files, &v), "stable");
    let mut reordered = files.clone();
    reordered.reverse();
    assert_eq!(
        base,
        image_key("R", &reordered, &v),
        "listing order does not matter"
    );

    let mut content = files.clone();
    content[1].content = b"2".to_vec();
    let mut mode = files.clone();
    mode[1].mode = 0o100755;
    let mut renamed = files.clone();
    renamed[1].rel = "overlay/etc/b".into();
    let mut added = files.clone();
    added.push(entry("README.md", 0o100644, "hi"));
    for (what, other) in [
        ("content", image_key("R", &content, &v)),
        ("mode", image_key("R", &mode, &v)),
        ("name", image_key("R", &renamed, &v)),
        ("added file", image_key("R", &added, &v)),
        (
            "variant",
            image_key("R", &files, &vars(&[("gate", "dashboard")])),
        ),
        ("rootfs", image_key("R2", &files, &v)),
    ] {
        assert_ne!(base, other, "{what} must change the key");
    }
}

#[test]
fn recipe_entries_read_the_folder_and_ignore_its_location() {
    use std::os::unix::fs::PermissionsExt;
    let make = || {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("recipe.yaml"), "suite: bookworm\n").unwrap();
        std::fs::create_dir_all(d.path().join("overlay/usr/bin")).unwrap();
        let tool = d.path().join("overlay/usr/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/usr/bin/tool", d.path().join("overlay/usr/bin/alias"))
            .unwrap();
        d
    };
    let (a, b) = (make(), make());
    let ea = recipe_entries(a.path()).unwrap();
    assert_eq!(
        ea,
        recipe_entries(b.path()).unwrap(),
        "same content in another folder"
    );
    let rels: Vec<&str> = ea.iter().map(|e| e.rel.as_str()).collect();
    assert_eq!(
        rels,
        [
            "overlay",
            "overlay/usr",
            "overlay/usr/bin",
            "overlay/usr/bin/alias",
            "overlay/usr/bin/tool",
            "recipe.yaml"
        ]
    );
    let v = BTreeMap::new();
    let before = image_key("R", &ea, &v);
    let tool = b.path().join("overlay/usr/bin/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_ne!(
        before,
        image_key("R", &recipe_entries(b.path()).unwrap(), &v)
    );
}

#[tokio::test]
async fn fill_is_atomic_and_second_call_hits() {
    let root = tempfile::tempdir().unwrap();
    let (entry, hit) = get_or_fill(root.path(), Kind::Image, "k1", |tmp| async move {
        std::fs::write(tmp.join("disk.qcow2"), "x")?;
        std::fs::write(tmp.join(META_FILE), "{}")?;
        Ok(())
    })
    .await
    .unwrap();
    assert!(!hit && entry.join("disk.qcow2").is_file());
    let (again, hit) = get_or_fill(root.path(), Kind::Image, "k1", |_| async {
        anyhow::bail!("must not build on a hit")
    })
    .await
    .unwrap();
    assert!(hit && again == entry);
}

#[tokio::test]
async fn failed_fill_leaves_no_entry_and_keeps_the_log() {
    let root = tempfile::tempdir().unwrap();
    let err = get_or_fill(root.path(), Kind::Rootfs, "k2", |tmp| async move {
        std::fs::write(tmp.join("build.log"), "it broke")?;
        Err(crate::error::infra("boom"))
    })
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert!(!entry_dir(root.path(), Kind::Rootfs, "k2").exists());
    let kept = std::fs::read_to_string(root.path().join("rootfs/k2.failed.log")).unwrap();
    assert_eq!(kept, "it broke");
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("rootfs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn concurrent_fills_build_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let root = tempfile::tempdir().unwrap();
    let builds = std::sync::Arc::new(AtomicUsize::new(0));
    let fill = |n: std::sync::Arc<AtomicUsize>| {
        move |tmp: PathBuf| async move {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            std::fs::write(tmp.join(META_FILE), "{}")?;
            Ok(())
        }
    };
    let (a, b) = tokio::join!(
        get_or_fill(root.path(), Kind::Image, "k3", fill(builds.clone())),
        get_or_fill(root.path(), Kind::Image, "k3", fill(builds.clone())),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(a.0, b.0);
    assert!(a.1 != b.1, "exactly one of the two built");
}

#[test]
fn cache_root_prefers_explicit_then_env() {
    assert_eq!(
        cache_root(Some(Path::new("/x"))).unwrap(),
        PathBuf::from("/x")
    );
}
