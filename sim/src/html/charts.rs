//! Charts as SVG text, drawn by plotters' SVG backend: lines over x (with shaded spans for
//! faults, a dashed bound for an SLO and a marked point), and bars by category. The SVG goes
//! inline into the page: no fonts, scripts or images are fetched.

use plotters::prelude::*;

const SIZE: (u32, u32) = (760, 340);
/// Colour-blind-safe (Okabe-Ito) series colours.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
];
const FAULT: RGBColor = RGBColor(213, 94, 0);

/// A chart that could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("chart {title:?}: {message}")]
pub struct ChartError {
    pub title: String,
    pub message: String,
}

#[derive(Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Half-widths of an interval about each point (a 95% interval), drawn as error bars.
    pub errors: Vec<f64>,
}

/// A span of x shaded and labelled (a fault).
pub struct Span {
    pub from: f64,
    pub to: f64,
}

#[derive(Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub spans: Vec<Span>,
    /// A horizontal bound (an SLO), dashed, with its label.
    pub bound: Option<(f64, String)>,
    /// A point to mark (the recommendation), with its label.
    pub marker: Option<((f64, f64), String)>,
    /// Draw each point as a dot too (for few points).
    pub dots: bool,
}

/// A range that plotters can draw: finite, not empty, with a little room above.
fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + lo.abs().max(1.0);
    }
    (lo, hi + (hi - lo) * 0.05)
}

pub fn line_chart(chart: &LineChart) -> Result<String, ChartError> {
    let err = |e: String| ChartError {
        title: chart.title.clone(),
        message: e,
    };
    let mut svg = String::new();
    draw_lines(chart, &mut svg).map_err(|e| err(e.to_string()))?;
    Ok(svg)
}

fn draw_lines<'s>(
    chart: &LineChart,
    svg: &'s mut String,
) -> Result<(), Box<dyn std::error::Error + 's>> {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = range(xs.chain(chart.marker.iter().map(|m| m.0 .0)), false);
    // The y range covers the error bars too.
    let ys = chart.series.iter().flat_map(|s| {
        s.points.iter().enumerate().flat_map(|(i, p)| {
            let e = s.errors.get(i).copied().unwrap_or(0.0);
            [p.1 - e, p.1 + e]
        })
    });
    let extra = chart.bound.iter().map(|b| b.0);
    let (y0, y1) = range(ys.chain(extra), true);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    plot.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let thin = (x1 - x0) / 400.0;
    for span in &chart.spans {
        let to = span.to.max(span.from + thin);
        plot.draw_series(std::iter::once(Rectangle::new(
            [(span.from, y0), (to, y1)],
            FAULT.mix(0.18).filled(),
        )))?;
    }
    if !chart.spans.is_empty() {
        plot.draw_series(std::iter::once(Rectangle::new(
            [(x0, y0), (x0, y0)],
            FAULT.mix(0.18).filled(),
        )))?
        .label("fault")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], FAULT.mix(0.3).filled()));
    }
    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        plot.draw_series(LineSeries::new(
            series.points.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(series.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        plot.draw_series(series.points.iter().zip(&series.errors).map(|(p, e)| {
            PathElement::new(vec![(p.0, p.1 - e), (p.0, p.1 + e)], colour.stroke_width(1))
        }))?;
        if chart.dots {
            plot.draw_series(
                series
                    .points
                    .iter()
                    .map(|p| Circle::new(*p, 3, colour.filled())),
            )?;
        }
    }
    if let Some((value, label)) = &chart.bound {
        let red = RGBColor(200, 0, 0);
        plot.draw_series(DashedLineSeries::new(
            vec![(x0, *value), (x1, *value)],
            8,
            5,
            red.stroke_width(2),
        ))?
        .label(label.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
    }
    if let Some((at, label)) = &chart.marker {
        let green = RGBColor(0, 140, 60);
        plot.draw_series(std::iter::once(Circle::new(*at, 8, green.stroke_width(3))))?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, green.stroke_width(2)));
    }
    plot.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Bars by category, each labelled with its count.
pub fn bar_chart(title: &str, bars: &[(&str, f64)]) -> Result<String, ChartError> {
    let mut svg = String::new();
    draw_bars(title, bars, &mut svg).map_err(|e| ChartError {
        title: title.to_string(),
        message: e.to_string(),
    })?;
    Ok(svg)
}

fn draw_bars<'s>(
    title: &str,
    bars: &[(&str, f64)],
    svg: &'s mut String,
) -> Result<(), Box<dyn std::error::Error + 's>> {
    let (_, top) = range(bars.iter().map(|b| b.1), true);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let n = bars.len().max(1) as f64;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    let mut plot = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..n, 0.0..top * 1.1)?;
    plot.configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (*x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("jobs")
        .draw()?;
    for (i, (_, count)) in bars.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let x = i as f64;
        plot.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, *count)],
            colour.filled(),
        )))?;
        plot.draw_series(std::iter::once(Text::new(
            format!("{count}"),
            (x + 0.4, count + top * 0.03),
            ("sans-serif", 14),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_is_one_svg_with_its_parts() {
        let svg = line_chart(&LineChart {
            title: "wait".into(),
            x_label: "s".into(),
            y_label: "share".into(),
            series: vec![Series {
                name: "infer".into(),
                points: vec![(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)],
                errors: vec![0.1, 0.2, 0.1],
            }],
            spans: vec![Span { from: 0.5, to: 0.7 }],
            bound: Some((0.8, "SLO".into())),
            marker: Some(((1.0, 0.5), "recommended".into())),
            dots: true,
        })
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for part in [
            "infer",
            "SLO",
            "recommended",
            "fault",
            "<polyline",
            "<circle",
            "<rect",
        ] {
            assert!(svg.contains(part), "missing {part}");
        }
    }

    #[test]
    fn empty_and_flat_data_still_draw() {
        let empty = line_chart(&LineChart {
            title: "nothing".into(),
            ..LineChart::default()
        });
        assert!(empty.unwrap().contains("nothing"));
        let bars = bar_chart("jobs", &[("succeeded", 0.0), ("dead", 0.0)]).unwrap();
        assert!(bars.contains("succeeded") && bars.contains("<rect"));
    }
}
