//! Every config shipped in `configs/` parses, validates and builds a valid backbone.

use std::path::Path;

use ffc_train::TrainConfig;

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let config = TrainConfig::load(&path, &["rec=/data/faces".to_string()])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.backbone().validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 3, "found only {checked} configs in {}", dir.display());
}
