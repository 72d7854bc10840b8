//! SVG plots of a sweep, two charts stacked in one file: on top the cost
//! per new connection against N (p50 solid with markers, p99 dashed, one
//! colour per mode, log x axis), below the control-plane cost (time to
//! program the rules) against N on log-log axes. Drawn with plotters' SVG
//! backend, which writes `<text>` elements and leaves fonts to the viewer.
//! Each chart's legend sits in a strip to its right, clear of the lines;
//! its entries are `MODE p50`, `MODE p99` and `MODE programming`, one set
//! per mode measured.

use anyhow::{anyhow, Result};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{unsupported, Document, DocumentKind, ExportFormat, Exporter};
use crate::{
    analysis::{Analysis, Basis},
    results::Results,
    synthesis::program::Mode,
    text::thousands,
};

pub struct Svg;

const WIDTH: u32 = 1120;
/// The strip right of each chart that holds its legend, clear of the lines.
const LEGEND_WIDTH: u32 = 270;
const HEIGHT: u32 = 1100;

/// Okabe–Ito colours: distinct for colour-blind readers too.
pub fn mode_colour(mode: Mode) -> RGBColor {
    match mode {
        Mode::IptablesLegacy => RGBColor(0xD5, 0x5E, 0x00),
        Mode::IptablesNft => RGBColor(0xCC, 0x79, 0xA7),
        Mode::Ipvs => RGBColor(0x00, 0x72, 0xB2),
        Mode::Nftables => RGBColor(0x00, 0x9E, 0x73),
    }
}

impl Exporter for Svg {
    fn serves(&self, kind: DocumentKind) -> bool {
        kind == DocumentKind::Sweep
    }

    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        match document {
            Document::Sweep { results, analysis } => Ok(plot(results, analysis)?.into_bytes()),
            _ => Err(unsupported(ExportFormat::Svg, document.kind())),
        }
    }
}

/// One mode's points: (N, value) in ascending N.
struct Series {
    mode: Mode,
    p50: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
    program_ms: Vec<(f64, f64)>,
}

fn series(r: &Results, basis: Basis) -> Vec<Series> {
    r.modes()
        .into_iter()
        .map(|mode| {
            let points = r.points_of(mode);
            let new: Vec<_> = points.iter().filter(|p| basis.figure(p).count > 0 && p.services > 0).collect();
            Series {
                mode,
                p50: new.iter().map(|p| (f64::from(p.services), basis.figure(p).p50_ns as f64)).collect(),
                p99: new.iter().map(|p| (f64::from(p.services), basis.figure(p).p99_ns as f64)).collect(),
                program_ms: points
                    .iter()
                    .filter(|p| p.services > 0 && p.program_ms > 0.0)
                    .map(|p| (f64::from(p.services), p.program_ms))
                    .collect(),
            }
        })
        .collect()
}

/// A log axis range around `values` with some air; a single value gets a
/// decade around it so the axis is never empty.
fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return None;
    }
    Some((lo / 1.5, hi * 1.5))
}

/// A solid line's legend mark: a thin filled bar rather than a path, so
/// that every width-2 polyline in the file is a data line (the tests count
/// them).
fn solid_swatch(x: i32, y: i32, colour: RGBColor) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x, y - 1), (x + 24, y + 1)], colour.filled())
}

fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the SVG plot: {e}")
}

fn axis_n(v: &f64) -> String {
    thousands(v.round().max(0.0) as u64)
}

fn plot(r: &Results, a: &Analysis) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut title = format!("pathcost · kernel {}", r.kernel);
        if a.emulation_suspected {
            title.push_str(" · emulated or loaded machine: compare ratios, not absolute ns");
        }
        let root = root.titled(&title, ("sans-serif", 20)).map_err(draw_error)?;
        let all = series(r, a.basis);
        if all.iter().all(|s| s.p50.is_empty() && s.program_ms.is_empty()) {
            root.draw(&Text::new("no measured points", (40, 60), ("sans-serif", 20))).map_err(draw_error)?;
        } else {
            let (top, bottom) = root.split_vertically((HEIGHT - 30) / 2 + 10);
            cost_chart(&top, &all, a.basis)?;
            control_plane_chart(&bottom, &all)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// One legend line: label, colour, dashed or solid.
struct LegendEntry {
    label: String,
    colour: RGBColor,
    dashed: bool,
}

/// Draws the legend down the strip beside a chart.
fn legend(area: &DrawingArea<SVGBackend, Shift>, entries: &[LegendEntry]) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        let y = 70 + 26 * i as i32;
        if e.dashed {
            area.draw(&PathElement::new(vec![(8, y), (16, y)], e.colour.stroke_width(1))).map_err(draw_error)?;
            area.draw(&PathElement::new(vec![(22, y), (30, y)], e.colour.stroke_width(1))).map_err(draw_error)?;
        } else {
            area.draw(&solid_swatch(8, y, e.colour)).map_err(draw_error)?;
        }
        let style = TextStyle::from(("sans-serif", 17)).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(e.label.clone(), (40, y), style)).map_err(draw_error)?;
    }
    Ok(())
}

fn cost_chart(area: &DrawingArea<SVGBackend, Shift>, all: &[Series], basis: Basis) -> Result<()> {
    let (area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let area = &area;
    let mut entries = Vec::new();
    let Some((x_lo, x_hi)) = log_range(all.iter().flat_map(|s| s.p50.iter().map(|p| p.0))) else {
        return Ok(());
    };
    let y_max = all.iter().flat_map(|s| s.p99.iter().chain(&s.p50)).map(|p| p.1).fold(0.0, f64::max);
    // Microseconds once costs reach ten of them: shorter tick labels.
    let (scale, unit) = if y_max >= 10_000.0 { (1e-3, "µs") } else { (1.0, "ns") };
    let y_hi = (y_max * scale * 1.1).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} per new connection against services (p50 solid, p99 dashed)", basis.short()), ("sans-serif", 21))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..y_hi)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("services (log scale)")
        .y_desc(format!("{unit} per new connection ({})", basis.short()))
        .x_label_formatter(&axis_n)
        .y_label_formatter(&|v| if *v >= 10.0 { thousands(v.round() as u64) } else { format!("{v:.1}") })
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(draw_error)?;
    for s in all {
        let colour = mode_colour(s.mode);
        let scaled = |v: &[(f64, f64)]| v.iter().map(|&(n, y)| (n, y * scale)).collect::<Vec<_>>();
        let p50 = scaled(&s.p50);
        let p99 = scaled(&s.p99);
        chart.draw_series(LineSeries::new(p50.clone(), colour.stroke_width(2))).map_err(draw_error)?;
        chart.draw_series(p50.iter().map(|&c| Circle::new(c, 3, colour.filled()))).map_err(draw_error)?;
        chart.draw_series(DashedLineSeries::new(p99, 6, 4, colour.stroke_width(1))).map_err(draw_error)?;
        entries.push(LegendEntry { label: format!("{} p50", s.mode), colour, dashed: false });
        entries.push(LegendEntry { label: format!("{} p99", s.mode), colour, dashed: true });
    }
    legend(&legend_area, &entries)
}

fn control_plane_chart(area: &DrawingArea<SVGBackend, Shift>, all: &[Series]) -> Result<()> {
    let (area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let area = &area;
    let mut entries = Vec::new();
    let Some((x_lo, x_hi)) = log_range(all.iter().flat_map(|s| s.program_ms.iter().map(|p| p.0))) else {
        return Ok(());
    };
    let Some((y_lo, y_hi)) = log_range(all.iter().flat_map(|s| s.program_ms.iter().map(|p| p.1))) else {
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption("control plane: time to program the rules against services", ("sans-serif", 21))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("services (log scale)")
        .y_desc("ms to program (log scale)")
        .x_label_formatter(&axis_n)
        .y_label_formatter(&|v| if *v >= 10.0 { thousands(v.round() as u64) } else { format!("{v:.1}") })
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(draw_error)?;
    for s in all.iter().filter(|s| !s.program_ms.is_empty()) {
        let colour = mode_colour(s.mode);
        chart.draw_series(LineSeries::new(s.program_ms.clone(), colour.stroke_width(2))).map_err(draw_error)?;
        chart.draw_series(s.program_ms.iter().map(|&c| Circle::new(c, 3, colour.filled()))).map_err(draw_error)?;
        entries.push(LegendEntry { label: format!("{} programming", s.mode), colour, dashed: false });
    }
    legend(&legend_area, &entries)
}
