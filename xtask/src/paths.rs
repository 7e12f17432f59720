//! Locations that every command needs: the workspace root and the download cache.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Returns the workspace root, the parent of this crate's manifest folder.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().expect("xtask's manifest folder has a parent").to_path_buf()
}

/// Returns the download cache: `$FFC_CACHE_DIR` if set, else `$XDG_CACHE_HOME/ffc`, else
/// `$HOME/.cache/ffc`. A relative `$FFC_CACHE_DIR` is resolved against the current directory.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let dir = resolve_cache_dir(
        env::var_os("FFC_CACHE_DIR"),
        env::var_os("XDG_CACHE_HOME"),
        env::var_os("HOME"),
    )
    .context("no cache folder: set FFC_CACHE_DIR, XDG_CACHE_HOME or HOME")?;
    std::path::absolute(&dir)
        .with_context(|| format!("failed to resolve the cache folder {}", dir.display()))
}

/// Applies the cache folder precedence to the given variable values. Empty values count as
/// unset, and a relative `XDG_CACHE_HOME` is ignored, as the XDG base directory specification
/// requires.
fn resolve_cache_dir(
    ffc_cache_dir: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(ffc_cache_dir)
        .or_else(|| set(xdg_cache_home).filter(|p| p.is_absolute()).map(|p| p.join("ffc")))
        .or_else(|| set(home).map(|p| p.join(".cache").join("ffc")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(value: &str) -> Option<OsString> {
        Some(OsString::from(value))
    }

    #[test]
    fn ffc_cache_dir_wins() {
        let dir = resolve_cache_dir(os("/data/ffc"), os("/xdg"), os("/home/u"));
        assert_eq!(dir, Some(PathBuf::from("/data/ffc")));
    }

    #[test]
    fn xdg_cache_home_beats_home() {
        let dir = resolve_cache_dir(None, os("/xdg"), os("/home/u"));
        assert_eq!(dir, Some(PathBuf::from("/xdg/ffc")));
    }

    #[test]
    fn home_is_the_fallback() {
        let dir = resolve_cache_dir(os(""), os("relative/xdg"), os("/home/u"));
        assert_eq!(dir, Some(PathBuf::from("/home/u/.cache/ffc")));
    }

    #[test]
    fn no_variables_give_none() {
        assert_eq!(resolve_cache_dir(None, os(""), None), None);
    }

    #[test]
    fn workspace_root_has_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
