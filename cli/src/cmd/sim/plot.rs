//! `tessera sim --plot FILE.svg`: the samples of both runs drawn over time, for people who
//! would rather look than read the table. Three panels sharing the time axis: cpu and memory
//! utilization under offers and under static partitioning; each framework's dominant share
//! under offers; the same under static partitioning. Each framework's fair share (its weight
//! over the joined frameworks' weights) is drawn dashed in its colour under both.
//!
//! Drawn with plotters' SVG backend alone: its text is written as SVG `<text>` elements sized
//! by plotters' built-in estimate, so no system font is read (the viewer picks the font).

use super::report::SimReport;
use super::workload::{self, SimConfig};
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

/// Size of the picture in pixels.
const SIZE: (u32, u32) = (1000, 900);

/// One line of a panel: its legend label (none for a dashed line), colour, and points
/// (seconds, fraction).
struct Line {
    label: Option<String>,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// The legend label of framework `f` (its role and weight, as the workload assigns them).
pub fn framework_label(cfg: &SimConfig, f: usize) -> String {
    let r = f % cfg.role_weights.len().max(1);
    let w = cfg.role_weights.get(r).copied().unwrap_or(1.0);
    format!("fw{f} (role r{r}, weight {w})")
}

/// Writes the plot of `shared` and `partitioned` (runs of `cfg`) to `path` as SVG.
pub fn write_svg(
    path: &Path,
    cfg: &SimConfig,
    shared: &SimReport,
    partitioned: &SimReport,
) -> anyhow::Result<()> {
    let end = cfg.duration.as_secs_f64().max(1.0);
    let series = |r: &SimReport, f: fn(&super::report::Sample) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (s.t, f(s))).collect()
    };
    let utilization = vec![
        Line {
            label: Some("offers: cpu".into()),
            color: RGBColor(31, 119, 180),
            points: series(shared, |s| s.cpu_util),
        },
        Line {
            label: Some("offers: memory".into()),
            color: RGBColor(44, 160, 44),
            points: series(shared, |s| s.mem_util),
        },
        Line {
            label: Some("static: cpu".into()),
            color: RGBColor(255, 127, 14),
            points: series(partitioned, |s| s.cpu_util),
        },
        Line {
            label: Some("static: memory".into()),
            color: RGBColor(214, 39, 40),
            points: series(partitioned, |s| s.mem_util),
        },
    ];
    let fair: Vec<Vec<f64>> = shared
        .samples
        .iter()
        .map(|s| workload::fair_shares(cfg, s.t))
        .collect();
    let shares = |r: &SimReport| -> Vec<Line> {
        let fair = (0..cfg.frameworks).map(|f| Line {
            label: None,
            color: palette(f),
            points: shared
                .samples
                .iter()
                .zip(&fair)
                .map(|(s, fair)| (s.t, fair[f]))
                .collect(),
        });
        (0..cfg.frameworks)
            .map(|f| Line {
                label: Some(framework_label(cfg, f)),
                color: palette(f),
                points: r
                    .samples
                    .iter()
                    .map(|s| (s.t, s.shares.get(f).copied().unwrap_or(0.0)))
                    .collect(),
            })
            .chain(fair)
            .collect()
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    panel(
        &panels[0],
        "utilization: offers vs static partitioning",
        "fraction used",
        end,
        &utilization,
    )?;
    panel(
        &panels[1],
        "dominant share per framework: offers",
        "dominant share (dashed: fair)",
        end,
        &shares(shared),
    )?;
    panel(
        &panels[2],
        "dominant share per framework: static partitioning",
        "dominant share (dashed: fair)",
        end,
        &shares(partitioned),
    )?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A categorical colour for framework `i`.
fn palette(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// One panel: time on x (0..`end` seconds), a fraction on y (0..1), `lines` with a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    end: f64,
    lines: &[Line],
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..end, 0f64..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for l in lines {
        let color = l.color;
        let Some(label) = &l.label else {
            chart
                .draw_series(DashedLineSeries::new(
                    l.points.iter().copied(),
                    6,
                    4,
                    color.mix(0.7).stroke_width(1),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            continue;
        };
        chart
            .draw_series(LineSeries::new(
                l.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
