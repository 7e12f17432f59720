//! The head benchmark's plot: step time and peak memory against N on log axes, FFC and FC side
//! by side, with a note under the panels for every FC point that does not fit.
//!
//! Text is drawn with DejaVu Sans Mono, embedded from the trainer's assets, so no system font
//! library is needed.

use std::error::Error;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::head::{FcRecord, HeadResults};
use super::page::{grouped, significant};

const FONT: &[u8] = include_bytes!("../../../crates/ffc-train/assets/DejaVuSansMono.ttf");

/// Size of the PNG in pixels.
const SIZE: (u32, u32) = (1200, 560);

/// Height of the strip under the panels that contains the notes.
const NOTE_HEIGHT: u32 = 60;

type Points = Vec<(f64, f64)>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws the PNG at `path`.
pub(crate) fn draw_head(path: &Path, results: &HeadResults) -> Result<()> {
    register_font();
    draw(path, results).map_err(|err| anyhow!("{err}"))
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType file"));
    });
}

fn draw(path: &Path, results: &HeadResults) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "Classifier head step: FFC pool (Q = {}) against a full N x 512 FC",
        grouped(results.queue_size)
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (panels, notes) = root.split_vertically(root.dim_in_pixel().1 - NOTE_HEIGHT);
    let (left, right) = panels.split_horizontally(SIZE.0 / 2);

    let ffc_time = results.sweep.iter().map(|row| (row.ffc.ids as f64, row.ffc.median_ms));
    let fc_time = results
        .sweep
        .iter()
        .filter_map(|row| row.fc.measured().map(|(ms, _)| (row.fc.ids() as f64, ms)));
    panel(&left, "step time (median)", "ms", ffc_time.collect(), fc_time.collect())?;

    let ffc_peak = results.sweep.iter().map(|row| (row.ffc.ids as f64, row.ffc.peak_mb));
    let fc_peak = results
        .sweep
        .iter()
        .filter_map(|row| row.fc.measured().map(|(_, peak)| (row.fc.ids() as f64, peak)));
    panel(&right, "peak resident memory", "MiB", ffc_peak.collect(), fc_peak.collect())?;

    draw_notes(&notes, results)?;
    root.present()?;
    Ok(())
}

/// Draws one log-log panel with the FFC and the FC series.
///
/// The axes are linear in log10 of the values, with labels at the powers of ten on x, because
/// plotters' own log axes label so many points that neighbouring labels overlap.
fn panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    ffc: Points,
    fc: Points,
) -> Result<(), Box<dyn Error>> {
    let to_log = |points: Points| -> Points {
        points
            .into_iter()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .map(|(x, y)| (x.log10(), y.log10()))
            .collect()
    };
    let (ffc, fc) = (to_log(ffc), to_log(fc));
    let all = || ffc.iter().chain(&fc);
    let x_range = padded_range(all().map(|p| p.0), 0.3);
    let y_range = padded_range(all().map(|p| p.1), 0.3);
    let y_span = y_range.end - y_range.start;

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("N identities (log scale)")
        .y_desc(format!("{unit} (log scale)"))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                short_count(10f64.powi(x.round() as i32))
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            // Across more than one decade, powers of ten are enough and read better.
            let decade = (y - y.round()).abs() < 1e-9;
            if y_span <= 1.0 || decade { significant(10f64.powf(*y)) } else { String::new() }
        })
        .draw()?;

    // FFC values are written under their points and FC values above, so they stay apart.
    let series = [("FFC", BLUE, ffc, 8), ("FC", RED, fc, -20)];
    for (name, color, points, label_offset) in series {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        let label_style = ("sans-serif", 13).into_font().color(&color);
        chart.draw_series(points.iter().map(|&(x, y)| {
            let text = significant(10f64.powf(y));
            EmptyElement::at((x, y)) + Text::new(text, (-12, label_offset), label_style.clone())
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Returns the range of the values widened by `pad` on both sides, or 0..1 without values.
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (low, high) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if low.is_finite() { (low - pad)..(high + pad) } else { 0.0..1.0 }
}

/// Writes one line under the panels for every FC point that does not fit.
fn draw_notes(area: &Area<'_>, results: &HeadResults) -> Result<(), Box<dyn Error>> {
    let style = ("sans-serif", 15).into_font().color(&BLACK);
    let lines = results.sweep.iter().filter_map(|row| match row.fc {
        FcRecord::DoesNotFit { ids, required_mb, available_mb } => Some(format!(
            "FC absent at N = {}: weight, gradient and momentum need {} MiB, {} MiB available",
            grouped(ids),
            significant(required_mb),
            significant(available_mb)
        )),
        FcRecord::Measured { .. } => None,
    });
    for (index, line) in lines.enumerate() {
        area.draw_text(&line, &style, (20, 8 + 20 * index as i32))?;
    }
    Ok(())
}

/// Formats an axis count briefly: 10k, 1M, 2.5M.
fn short_count(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::head::{FfcRecord, SweepRow};

    #[test]
    fn short_counts() {
        assert_eq!(short_count(500.0), "500");
        assert_eq!(short_count(10_000.0), "10k");
        assert_eq!(short_count(2_500_000.0), "2.5M");
        assert_eq!(short_count(10_000_000.0), "10M");
        let decades: Vec<String> = (2..8).map(|k| short_count(10f64.powi(k))).collect();
        assert_eq!(decades, ["100", "1k", "10k", "100k", "1M", "10M"]);
    }

    #[test]
    fn ranges_padded() {
        assert_eq!(padded_range([4.0, 7.0, 5.0].into_iter(), 0.5), 3.5..7.5);
        assert_eq!(padded_range(std::iter::empty(), 0.5), 0.0..1.0);
    }

    #[test]
    fn plot_written() {
        let ffc = |ids: u64| FfcRecord {
            ids,
            queue_size: 10_000,
            per_pass: 96,
            median_ms: 100.0,
            matmul_ms: 50.0,
            pool_update_ms: 0.1,
            peak_mb: 84.0,
            peak_after_setup: true,
        };
        let results = HeadResults {
            queue_size: 10_000,
            sweep: vec![
                SweepRow {
                    ffc: ffc(10_000),
                    ffc_rounds: vec![100.0],
                    fc: FcRecord::Measured {
                        ids: 10_000,
                        median_ms: 200.0,
                        peak_mb: 140.0,
                        peak_after_setup: true,
                    },
                },
                SweepRow {
                    ffc: ffc(10_000_000),
                    ffc_rounds: vec![100.0],
                    fc: FcRecord::DoesNotFit {
                        ids: 10_000_000,
                        required_mb: 58_593.75,
                        available_mb: 22_000.0,
                    },
                },
            ],
            ratio: vec![],
            pairs: vec![],
        };
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("head.png");
        draw_head(&path, &results).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "a plot with text is larger than {} bytes", bytes.len());
    }
}
