//! The benchmark page: marked sections that the bench commands rewrite, and the number formats
//! they share.
//!
//! A section named `head` is the text between the lines `<!-- bench:head:start -->` and
//! `<!-- bench:head:end -->`. Rewriting a section keeps everything outside its markers.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Page written when the page file does not exist yet.
const NEW_PAGE: &str = "# Benchmarks\n\nWritten by `cargo xtask bench`.\n";

/// Returns the start and end marker lines of section `name`.
fn markers(name: &str) -> (String, String) {
    (format!("<!-- bench:{name}:start -->"), format!("<!-- bench:{name}:end -->"))
}

/// Returns the byte range of the text between the markers of section `name` in `page`, or `None` when the
/// page has neither marker.
fn find_markers(page: &str, name: &str) -> Result<Option<std::ops::Range<usize>>> {
    let (start, end) = markers(name);
    let starts: Vec<usize> = page.match_indices(&start).map(|(at, _)| at).collect();
    let ends: Vec<usize> = page.match_indices(&end).map(|(at, _)| at).collect();
    match (starts.as_slice(), ends.as_slice()) {
        ([], []) => Ok(None),
        ([s], [e]) if s < e => Ok(Some(s + start.len()..*e)),
        ([_], [_]) => bail!("marker `{end}` comes before `{start}`; put the end marker last"),
        _ => bail!(
            "expected one `{start}` and one `{end}`, found {} and {}; remove the extra markers",
            starts.len(),
            ends.len()
        ),
    }
}

/// Returns the text between the markers of section `name`, or `None` when the page has no such
/// section.
pub(crate) fn section_body<'a>(page: &'a str, name: &str) -> Result<Option<&'a str>> {
    Ok(find_markers(page, name)?.map(|body| &page[body]))
}

/// Returns `page` with the body of section `name` replaced by `body`. A page without the
/// section gets it appended at the end.
pub(crate) fn replace_section(page: &str, name: &str, body: &str) -> Result<String> {
    let body = body.trim_matches('\n');
    match find_markers(page, name)? {
        Some(old) => Ok(format!("{}\n{body}\n{}", &page[..old.start], &page[old.end..])),
        None => {
            let (start, end) = markers(name);
            let separator = if page.is_empty() || page.ends_with("\n\n") {
                ""
            } else if page.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{page}{separator}{start}\n{body}\n{end}\n"))
        }
    }
}

/// Reads the page at `path`, or a new page when the file does not exist.
pub(crate) fn read_page(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(NEW_PAGE.to_owned()),
        Err(err) => Err(err).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Rewrites section `name` of the page at `path`, creating the page if needed.
pub(crate) fn update_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let page = read_page(path)?;
    let updated = replace_section(&page, name, body)
        .with_context(|| format!("invalid section `{name}` in {}", path.display()))?;
    write_file(path, updated.as_bytes())?;
    eprintln!("xtask: wrote section `{name}` of {}", path.display());
    Ok(())
}

/// Writes `contents` to `path` through a temporary file in the same folder, so that an
/// interrupted run leaves the old file whole.
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(folder)
        .with_context(|| format!("failed to create the folder {}", folder.display()))?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let temporary = folder.join(format!(".{}.tmp", name.to_string_lossy()));
    fs::write(&temporary, contents)
        .with_context(|| format!("failed to write {}", temporary.display()))?;
    fs::rename(&temporary, path)
        .with_context(|| format!("failed to move {} to {}", temporary.display(), path.display()))
}

/// Formats a measured value with about three significant digits, without an exponent unless
/// the value is below 0.001.
pub(crate) fn significant(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() {
        "n/a".to_owned()
    } else if magnitude >= 100.0 {
        group_thousands(&format!("{value:.0}"))
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude >= 0.001 || magnitude == 0.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.2e}")
    }
}

/// Formats an integer with a space between groups of three digits: `10 000 000`.
pub(crate) fn grouped(value: u64) -> String {
    group_thousands(&value.to_string())
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |rest| ("-", rest));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# Title\n\nintro\n\n<!-- bench:head:start -->\nold table\n\
                        <!-- bench:head:end -->\n\nafter\n";

    #[test]
    fn section_replaced_in_place() {
        let page = replace_section(PAGE, "head", "new table\n").unwrap();
        assert_eq!(
            page,
            "# Title\n\nintro\n\n<!-- bench:head:start -->\nnew table\n\
             <!-- bench:head:end -->\n\nafter\n"
        );
    }

    #[test]
    fn replacement_is_idempotent() {
        let once = replace_section(PAGE, "head", "\n\nbody\n\n").unwrap();
        let twice = replace_section(&once, "head", "body").unwrap();
        assert_eq!(once, twice);
        assert_eq!(section_body(&twice, "head").unwrap(), Some("\nbody\n"));
    }

    #[test]
    fn other_sections_are_kept() {
        let page = replace_section(PAGE, "lru", "lru table").unwrap();
        let page = replace_section(&page, "head", "head table").unwrap();
        assert!(page.contains("<!-- bench:lru:start -->\nlru table\n<!-- bench:lru:end -->\n"));
        assert!(page.contains("<!-- bench:head:start -->\nhead table\n<!-- bench:head:end -->"));
        assert!(page.starts_with("# Title\n\nintro\n\n"));
        assert!(page.contains("\n\nafter\n"));
    }

    #[test]
    fn missing_section_is_appended() {
        let page = replace_section("# Title\nintro", "pool", "rows").unwrap();
        assert_eq!(
            page,
            "# Title\nintro\n\n<!-- bench:pool:start -->\nrows\n<!-- bench:pool:end -->\n"
        );
        let page = replace_section("", "pool", "rows").unwrap();
        assert_eq!(page, "<!-- bench:pool:start -->\nrows\n<!-- bench:pool:end -->\n");
    }

    #[test]
    fn similar_section_names_do_not_match() {
        let page = "<!-- bench:headline:start -->\nx\n<!-- bench:headline:end -->\n";
        let updated = replace_section(page, "head", "y").unwrap();
        assert!(updated.starts_with(page), "{updated}");
        assert!(updated.ends_with("<!-- bench:head:start -->\ny\n<!-- bench:head:end -->\n"));
    }

    #[test]
    fn broken_markers_are_errors() {
        let lone_start = "<!-- bench:head:start -->\nx\n";
        let err = replace_section(lone_start, "head", "y").unwrap_err().to_string();
        assert!(err.contains("found 1 and 0"), "{err}");

        let reversed = "<!-- bench:head:end -->\n<!-- bench:head:start -->\n";
        let err = replace_section(reversed, "head", "y").unwrap_err().to_string();
        assert!(err.contains("comes before"), "{err}");

        let doubled = format!("{PAGE}{PAGE}");
        let err = replace_section(&doubled, "head", "y").unwrap_err().to_string();
        assert!(err.contains("found 2 and 2"), "{err}");
    }

    #[test]
    fn update_creates_and_rewrites_page() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("docs").join("bench.md");
        update_section(&path, "lru", "first").unwrap();
        update_section(&path, "lru", "second").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(NEW_PAGE));
        assert!(text.contains("\nsecond\n"));
        assert!(!text.contains("first"));
        let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file is renamed away");
    }

    #[test]
    fn significant_digits() {
        assert_eq!(significant(37955.5), "37 956");
        assert_eq!(significant(171.9), "172");
        assert_eq!(significant(54.59), "54.6");
        assert_eq!(significant(3.456), "3.46");
        assert_eq!(significant(0.0871), "0.087");
        assert_eq!(significant(0.0), "0.000");
        assert_eq!(significant(0.00012), "1.20e-4");
        assert_eq!(significant(f64::NAN), "n/a");
    }

    #[test]
    fn thousands_grouping() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(10_000), "10 000");
        assert_eq!(grouped(10_000_000), "10 000 000");
        assert_eq!(significant(-1234.0), "-1 234");
    }
}
