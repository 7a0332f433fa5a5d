//! Folder-per-class image sets (`DIR/<class>/*.JPEG`) for training and evaluation.
//!
//! A folder is matched to a class by WordNet id or by label, so an Imagenette checkout
//! (`n01440764/…`) and a hand-made set (`tench/…`) both work.

use crate::manifest::{imagenette_classes, ClassEntry};
use crate::probe::list_images;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One image and the index of its class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct FolderDataset {
    pub root: PathBuf,
    pub classes: Vec<ClassEntry>,
    /// Sorted by class, then by path: the same order on every machine.
    pub samples: Vec<LabelledImage>,
    /// Sub-folders that matched none of the classes (with [`FolderDataset::with_classes`]).
    pub unmatched_folders: Vec<String>,
}

fn class_folders(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(root).map_err(|source| Error::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut folders: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(Error::Dataset(format!(
            "{} has no class sub-folders (expected DIR/<class>/<images>)",
            root.display()
        )));
    }
    Ok(folders)
}

/// A class for a folder name: an Imagenette WordNet id gets its label, anything else is its own.
pub fn class_for_folder(name: &str) -> ClassEntry {
    imagenette_classes()
        .into_iter()
        .find(|c| c.wnid == name)
        .unwrap_or_else(|| ClassEntry {
            wnid: name.to_string(),
            label: name.to_string(),
        })
}

impl FolderDataset {
    /// Every sub-folder of `root` is a class, in sorted order.
    pub fn discover(root: &Path) -> Result<FolderDataset> {
        let folders = class_folders(root)?;
        let classes = folders.iter().map(|(n, _)| class_for_folder(n)).collect();
        let mut samples = Vec::new();
        for (label, (_, dir)) in folders.iter().enumerate() {
            samples.extend(
                list_images(dir)?
                    .into_iter()
                    .map(|path| LabelledImage { path, label }),
            );
        }
        Self::checked(FolderDataset {
            root: root.to_path_buf(),
            classes,
            samples,
            unmatched_folders: Vec::new(),
        })
    }

    /// The sub-folders of `root` that name one of `classes` (by WordNet id or label); the others
    /// are listed in `unmatched_folders`.
    pub fn with_classes(root: &Path, classes: &[ClassEntry]) -> Result<FolderDataset> {
        let mut samples = Vec::new();
        let mut unmatched_folders = Vec::new();
        for (name, dir) in class_folders(root)? {
            match classes
                .iter()
                .position(|c| c.wnid == name || c.label == name)
            {
                Some(label) => samples.extend(
                    list_images(&dir)?
                        .into_iter()
                        .map(|path| LabelledImage { path, label }),
                ),
                None => unmatched_folders.push(name),
            }
        }
        samples.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
        Self::checked(FolderDataset {
            root: root.to_path_buf(),
            classes: classes.to_vec(),
            samples,
            unmatched_folders,
        })
    }

    fn checked(set: FolderDataset) -> Result<FolderDataset> {
        if set.samples.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no images (JPEG, PNG, WebP) in any class folder{}",
                set.root.display(),
                if set.unmatched_folders.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; these folders match none of the model's classes: {}",
                        set.unmatched_folders.join(", ")
                    )
                }
            )));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}
