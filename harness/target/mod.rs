//! Where a bootable system comes from: a Debian recipe built into a cached image, a
//! prebuilt image, or (later) a NixOS flake. Everything ends as a [`BootSpec`].

pub mod recipe;
