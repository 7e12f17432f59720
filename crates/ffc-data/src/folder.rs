//! Image folders: one sub-folder per identity, like torchvision's `ImageFolder`.
//!
//! Identity sub-folders are sorted by name (byte order) and numbered 0, 1, … in that order.
//! Sub-folders without image files are skipped and get no label. Inside a sub-folder, files with
//! the extension `.jpg`, `.jpeg`, `.png`, `.bmp`, `.pgm`, `.ppm` or `.pnm` (any case) are images,
//! sorted by file name. Other files and nested folders are ignored.
//!
//! Hidden entries, whose names start with `.`, are skipped at both levels: macOS writes
//! `._name.jpg` resource forks beside copied images and `.Trashes` or `.Spotlight-V100` folders
//! on removable drives, and none of them are faces. Symbolic links are followed. A link whose
//! target does not exist is skipped, and one warning counts such links.

use std::borrow::Cow;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::source::IdentityTable;
use crate::{DataError, FaceSource};

/// File extensions (lower case) read as images.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "pgm", "ppm", "pnm"];

/// An image folder opened for reading.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    /// Image files, grouped by identity in label order.
    files: Vec<PathBuf>,
    /// Sub-folder name of each identity.
    names: Vec<String>,
    identities: IdentityTable,
}

impl ImageFolder {
    /// Lists the identity sub-folders and image files under `root`.
    ///
    /// Fails when `root` is missing or not a folder, when a folder cannot be listed, or when no
    /// sub-folder contains an image file. Image files are not opened here.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::NotFound {
                path: root.to_path_buf(),
                expected: "an image folder with one sub-folder of images per identity",
            });
        }

        let mut listing = Listing::default();
        let mut files = Vec::new();
        let mut names = Vec::new();
        let mut counts = Vec::new();
        let mut skipped_folders = Vec::new();
        for folder in listing.entries(root)?.into_iter().filter(|path| path.is_dir()) {
            let images = listing.images(&folder)?;
            let name = file_name(&folder);
            if images.is_empty() {
                skipped_folders.push(name);
                continue;
            }
            counts.push((images.len(), names.len() as u64));
            names.push(name);
            files.extend(images);
        }

        listing.warn_about_broken_links(root);
        if names.is_empty() {
            return Err(DataError::EmptyFolder { path: root.to_path_buf() });
        }
        if !skipped_folders.is_empty() {
            tracing::warn!(
                root = %root.display(),
                count = skipped_folders.len(),
                first = %skipped_folders[0],
                "skipped sub-folders that contain no image files; they get no label"
            );
        }

        let identities = IdentityTable::from_counts(counts);
        Ok(Self { root: root.to_path_buf(), files, names, identities })
    }

    /// Returns the folder that was opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the file of `image`.
    pub fn path(&self, image: usize) -> &Path {
        &self.files[image]
    }

    /// Returns the sub-folder name of `identity`.
    pub fn identity_name(&self, identity: usize) -> &str {
        &self.names[identity]
    }
}

impl FaceSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn num_identities(&self) -> usize {
        self.identities.num_identities()
    }

    fn identity_of(&self, image: usize) -> usize {
        self.identities.identity_of(image)
    }

    fn identity_images(&self, identity: usize) -> Range<usize> {
        self.identities.images(identity)
    }

    fn identity_label(&self, identity: usize) -> u64 {
        self.identities.label(identity)
    }

    fn read(&self, image: usize) -> Result<Cow<'_, [u8]>, DataError> {
        let path = &self.files[image];
        let bytes = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
        Ok(Cow::Owned(bytes))
    }

    fn describe(&self, image: usize) -> String {
        format!("`{}`", self.files[image].display())
    }
}

/// Lists folders, skipping hidden entries and counting broken symbolic links.
#[derive(Default)]
struct Listing {
    broken_links: usize,
    first_broken_link: Option<PathBuf>,
}

impl Listing {
    /// Returns the entries of `folder` whose names do not start with `.`, sorted by name.
    /// Broken symbolic links are counted and left out.
    fn entries(&mut self, folder: &Path) -> Result<Vec<PathBuf>, DataError> {
        let listing = std::fs::read_dir(folder).map_err(|e| DataError::io("list", folder, e))?;
        let mut entries: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| DataError::io("list", folder, e))?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            if is_broken_link(&path) {
                self.broken_links += 1;
                self.first_broken_link.get_or_insert_with(|| path.clone());
                continue;
            }
            entries.push((name, path));
        }
        entries.sort();
        Ok(entries.into_iter().map(|(_, path)| path).collect())
    }

    /// Returns the image files directly inside `folder`, sorted by file name.
    fn images(&mut self, folder: &Path) -> Result<Vec<PathBuf>, DataError> {
        let entries = self.entries(folder)?;
        Ok(entries.into_iter().filter(|path| is_image_file(path)).collect())
    }

    fn warn_about_broken_links(&self, root: &Path) {
        let Some(first) = &self.first_broken_link else { return };
        tracing::warn!(
            root = %root.display(),
            count = self.broken_links,
            first = %first.display(),
            "skipped symbolic links whose target does not exist"
        );
    }
}

/// Returns whether `path` is a symbolic link whose target cannot be reached.
fn is_broken_link(path: &Path) -> bool {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
    is_link && std::fs::metadata(path).is_err()
}

/// Returns whether `path` is a file with one of [`IMAGE_EXTENSIONS`].
pub(crate) fn is_image_file(path: &Path) -> bool {
    let Some(extension) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    let extension = extension.to_ascii_lowercase();
    IMAGE_EXTENSIONS.contains(&extension.as_str()) && path.is_file()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.JPG", "b.Png", "c.txt", "d", "e.pgm"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let images = Listing::default().images(dir.path()).unwrap();
        let names: Vec<_> = images.iter().map(|p| file_name(p)).collect();
        assert_eq!(names, vec!["a.JPG", "b.Png", "e.pgm"]);
    }
}
