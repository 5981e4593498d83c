//! The PNG figure: makespan in units of T against the number of hosts, one line per
//! strategy, with a min–max band when there were several runs.
//!
//! Text is drawn with DejaVu Sans, compiled into the binary, so the figure renders the same on
//! a machine without any system fonts.

use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::summary::Summary;
use super::ReportError;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// Tableau 10: distinct on screen and in print.
const COLORS: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 700;

/// Everything the figure shows.
#[derive(Clone, Debug)]
pub struct Figure<'a> {
    /// The title, naming S and B.
    pub title: String,
    /// One line (and band) per strategy.
    pub summaries: &'a [Summary],
    /// An extra dashed line, such as the lower bound: its label and its points in units of T.
    pub floor: Option<(String, Vec<(u32, f64)>)>,
}

fn font_ready() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Draw(
            "the bundled font could not be loaded".into(),
        ))
    }
}

fn draw_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Draw(e.to_string())
}

/// Renders the figure and returns the PNG file's bytes.
pub fn render_png(fig: &Figure<'_>) -> Result<Vec<u8>, ReportError> {
    font_ready()?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let x_lo = fig.summaries.iter().map(|s| s.hosts).min().unwrap_or(1);
        let x_hi = fig
            .summaries
            .iter()
            .map(|s| s.hosts)
            .max()
            .unwrap_or(1)
            .max(x_lo + 1);
        let y_hi = fig.summaries.iter().map(|s| s.max).fold(1.0f64, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(&fig.title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("hosts C (receivers)")
            .y_desc("makespan / T   (T = S/B)")
            .label_style(("sans-serif", 16))
            .y_label_formatter(&|y| format!("{y}"))
            .axis_desc_style(("sans-serif", 18))
            .draw()
            .map_err(draw_err)?;

        let mut strategies = Vec::new();
        for s in fig.summaries {
            if !strategies.contains(&s.strategy) {
                strategies.push(s.strategy);
            }
        }
        for (i, k) in strategies.iter().enumerate() {
            let color = COLORS[i % COLORS.len()].to_rgba();
            let pts: Vec<&Summary> = fig.summaries.iter().filter(|s| s.strategy == *k).collect();
            if pts.iter().any(|s| s.runs > 1) {
                let band: Vec<(u32, f64)> = pts
                    .iter()
                    .map(|s| (s.hosts, s.max))
                    .chain(pts.iter().rev().map(|s| (s.hosts, s.min)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(band, color.mix(0.2).filled())))
                    .map_err(draw_err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|s| (s.hosts, s.mean)),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(k.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            // Host counts are whole numbers: mark each one so steps read as steps.
            chart
                .draw_series(
                    pts.iter()
                        .map(|s| Circle::new((s.hosts, s.mean), 3, color.filled())),
                )
                .map_err(draw_err)?;
        }
        if let Some((label, pts)) = &fig.floor {
            chart
                .draw_series(DashedLineSeries::new(
                    pts.iter().copied(),
                    8,
                    6,
                    BLACK.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(label.as_str())
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .map_err(draw_err)?;
    Ok(png)
}
