//! `metrics.csv` and the PNG plots of the loss and accuracy curves.
//!
//! Plots are drawn with plotters on a bitmap and a font embedded in the binary (DejaVu Sans
//! Mono, see `assets/`), so no system font library is needed.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
const HEADER: &str =
    "step,epoch,lr,loss,samples_per_sec,pooled_fraction,target,accuracy_mean,accuracy_std,xnorm";

/// One row of `metrics.csv`: a training log line or one evaluated target.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricRow {
    /// Training progress at a step.
    Train {
        /// Global step.
        step: usize,
        /// Epoch.
        epoch: usize,
        /// Learning rate.
        lr: f64,
        /// Mean loss since the previous row.
        loss: f64,
        /// Images per second through the step (both views).
        samples_per_sec: f64,
        /// Fraction of pass-B probes whose identity was pooled.
        pooled_fraction: f64,
    },
    /// Verification of one target at a step.
    Eval {
        /// Global step.
        step: usize,
        /// Epoch.
        epoch: usize,
        /// Target name.
        target: String,
        /// Mean fold accuracy.
        accuracy_mean: f64,
        /// Standard deviation of the fold accuracies.
        accuracy_std: f64,
        /// Mean raw embedding norm.
        xnorm: f64,
    },
}

impl MetricRow {
    fn step(&self) -> usize {
        match self {
            MetricRow::Train { step, .. } | MetricRow::Eval { step, .. } => *step,
        }
    }

    fn to_csv(&self) -> String {
        match self {
            MetricRow::Train { step, epoch, lr, loss, samples_per_sec, pooled_fraction } => {
                format!(
                    "{step},{epoch},{lr:.6e},{loss:.6},{samples_per_sec:.2},{pooled_fraction:.4},,,,"
                )
            }
            MetricRow::Eval { step, epoch, target, accuracy_mean, accuracy_std, xnorm } => {
                format!(
                    "{step},{epoch},,,,,{target},{accuracy_mean:.6},{accuracy_std:.6},{xnorm:.6}"
                )
            }
        }
    }

    fn from_csv(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 10 {
            return None;
        }
        let num = |i: usize| fields[i].parse::<f64>().ok();
        let step = fields[0].parse().ok()?;
        let epoch = fields[1].parse().ok()?;
        if fields[6].is_empty() {
            Some(MetricRow::Train {
                step,
                epoch,
                lr: num(2)?,
                loss: num(3)?,
                samples_per_sec: num(4)?,
                pooled_fraction: num(5)?,
            })
        } else {
            Some(MetricRow::Eval {
                step,
                epoch,
                target: fields[6].to_owned(),
                accuracy_mean: num(7)?,
                accuracy_std: num(8)?,
                xnorm: num(9)?,
            })
        }
    }
}

/// Appends rows to `metrics.csv` and redraws the plots from them.
pub struct Metrics {
    path: PathBuf,
    rows: Vec<MetricRow>,
    file: BufWriter<File>,
}

impl Metrics {
    /// Opens `<output>/metrics.csv`, keeping existing rows up to `keep_until_step` (a resumed
    /// run drops what was logged after its checkpoint) and starting a new file otherwise.
    pub fn open(output: &Path, keep_until_step: Option<usize>) -> std::io::Result<Self> {
        let path = output.join("metrics.csv");
        let rows = match keep_until_step {
            Some(last) if path.exists() => {
                read_rows(&path)?.into_iter().filter(|r| r.step() <= last).collect()
            }
            _ => Vec::new(),
        };
        let temp = output.join(".metrics.csv.tmp");
        {
            let mut writer = BufWriter::new(File::create(&temp)?);
            writeln!(writer, "{HEADER}")?;
            for row in &rows {
                writeln!(writer, "{}", row.to_csv())?;
            }
            writer.flush()?;
        }
        fs::rename(&temp, &path)?;
        let file = BufWriter::new(OpenOptions::new().append(true).open(&path)?);
        Ok(Self { path, rows, file })
    }

    /// Appends a row and flushes it to disk.
    pub fn push(&mut self, row: MetricRow) -> std::io::Result<()> {
        writeln!(self.file, "{}", row.to_csv())?;
        self.file.flush()?;
        self.rows.push(row);
        Ok(())
    }

    /// Returns the rows so far.
    pub fn rows(&self) -> &[MetricRow] {
        &self.rows
    }

    /// Draws `loss.png` and `accuracy.png` beside `metrics.csv`.
    pub fn plot(&self) -> Result<(), Box<dyn std::error::Error>> {
        register_font();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let loss: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter_map(|row| match row {
                MetricRow::Train { step, loss, .. } => Some((*step as f64, *loss)),
                MetricRow::Eval { .. } => None,
            })
            .collect();
        draw(&dir.join("loss.png"), "training loss", "loss", &[("loss".into(), loss)])?;

        let mut targets: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for row in &self.rows {
            if let MetricRow::Eval { step, target, accuracy_mean, .. } = row {
                let at = match targets.iter().position(|(name, _)| name == target) {
                    Some(at) => at,
                    None => {
                        targets.push((target.clone(), Vec::new()));
                        targets.len() - 1
                    }
                };
                targets[at].1.push((*step as f64, *accuracy_mean));
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        draw(&dir.join("accuracy.png"), "verification accuracy", "accuracy", &targets)
    }
}

fn read_rows(path: &Path) -> std::io::Result<Vec<MetricRow>> {
    let reader = BufReader::new(File::open(path)?);
    let mut rows = Vec::new();
    for line in reader.lines().skip(1) {
        if let Some(row) = MetricRow::from_csv(&line?) {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType file"));
    });
}

type Series = (String, Vec<(f64, f64)>);

fn draw(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let points = series.iter().flat_map(|(_, points)| points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);

    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (index, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
