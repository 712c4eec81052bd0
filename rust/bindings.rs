//! The thin pyo3 layer: argument conversion, GIL release, error mapping. No logic.
//!
//! Every kernel call runs inside `py.detach` (the GIL is released while rayon works), and every
//! `KernelError` variant becomes its `singledir.errors` class in one place: `impl From` below.

use numpy::{AsSliceError, PyReadonlyArray, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::error::KernelError;

pyo3::import_exception!(singledir.errors, InputError);
pyo3::import_exception!(singledir.errors, ShapeError);
pyo3::import_exception!(singledir.errors, ConfigError);
pyo3::import_exception!(singledir.errors, DataError);

impl From<KernelError> for PyErr {
    fn from(err: KernelError) -> PyErr {
        match err {
            KernelError::Shape(msg) => ShapeError::new_err(msg),
            KernelError::Value(msg) | KernelError::Capacity(msg) => InputError::new_err(msg),
            KernelError::Config(msg) => ConfigError::new_err(msg),
            KernelError::Format(msg) => DataError::new_err(msg),
        }
    }
}

/// A contiguous view of an array (the Python side makes arrays C-contiguous first).
fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_: AsSliceError| {
        ShapeError::new_err(format!(
            "{name} must be a C-contiguous array: pass numpy.ascontiguousarray({name})"
        ))
    })
}

fn labels_slice<'a>(a: &'a PyReadonlyArray1<'_, i64>) -> PyResult<&'a [i64]> {
    slice(a, "labels")
}

#[pymodule]
mod _core {
    use numpy::{
        IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
    };
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyDict};

    use super::{labels_slice, slice};
    use crate::kernels::mutual_info::{Binning, MiOptions};
    use crate::kernels::ordering;
    use crate::kernels::parquet_meta;
    use crate::kernels::units::{self, NegativePolicy, RecordStats, SummaryOptions, UnitSummary};
    use crate::kernels::walk;

    /// Version of the compiled core, to check that the extension matches the Python package.
    #[pyfunction]
    fn core_version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    #[allow(clippy::too_many_arguments)]
    fn options(
        n_classes: usize,
        moments: bool,
        negative: Option<&str>,
        mutual_info: bool,
        bins: usize,
        binning: &str,
        miller_madow: bool,
        shuffles: usize,
        seed: u64,
    ) -> PyResult<SummaryOptions> {
        Ok(SummaryOptions {
            n_classes,
            moments,
            selectivity: negative.map(NegativePolicy::parse).transpose()?,
            mutual_info: if mutual_info {
                Some(MiOptions {
                    bins,
                    binning: Binning::parse(binning)?,
                    miller_madow,
                    shuffles,
                    seed,
                })
            } else {
                None
            },
        })
    }

    fn to_dict<'py>(py: Python<'py>, s: UnitSummary) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let (n_units, k) = (s.n_units, s.n_classes);
        d.set_item("n_samples", s.n_samples.into_pyarray(py))?;
        d.set_item(
            "class_counts",
            s.class_counts.into_pyarray(py).reshape([n_units, k])?,
        )?;
        d.set_item(
            "class_means",
            s.class_means.into_pyarray(py).reshape([n_units, k])?,
        )?;
        d.set_item("mean", s.mean.into_pyarray(py))?;
        d.set_item("std", s.std.into_pyarray(py))?;
        d.set_item("min", s.min.into_pyarray(py))?;
        d.set_item("max", s.max.into_pyarray(py))?;
        d.set_item("fraction_active", s.fraction_active.into_pyarray(py))?;
        d.set_item("selectivity", s.selectivity.into_pyarray(py))?;
        d.set_item("preferred_class", s.preferred_class.into_pyarray(py))?;
        d.set_item("mutual_info", s.mi.into_pyarray(py))?;
        d.set_item("mutual_info_shuffled", s.mi_shuffled.into_pyarray(py))?;
        d.set_item("class_entropy", s.class_entropy.into_pyarray(py))?;
        Ok(d)
    }

    /// Per-unit statistics of a dense (n_samples, n_units) float32 array.
    #[pyfunction]
    #[pyo3(signature = (acts, labels, n_classes, *, negative=Some("error"), mutual_info=true,
        bins=10, binning="equal_width", miller_madow=false, shuffles=0, seed=0, moments=true))]
    #[allow(clippy::too_many_arguments)]
    fn dense_unit_summary<'py>(
        py: Python<'py>,
        acts: PyReadonlyArray2<'py, f32>,
        labels: PyReadonlyArray1<'py, i64>,
        n_classes: usize,
        negative: Option<&str>,
        mutual_info: bool,
        bins: usize,
        binning: &str,
        miller_madow: bool,
        shuffles: usize,
        seed: u64,
        moments: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = options(
            n_classes,
            moments,
            negative,
            mutual_info,
            bins,
            binning,
            miller_madow,
            shuffles,
            seed,
        )?;
        let shape = acts.shape();
        let (n_samples, n_units) = (shape[0], shape[1]);
        let a = slice(&acts, "acts")?;
        let l = labels_slice(&labels)?;
        let s = py.detach(|| units::summarize_dense(a, n_samples, n_units, l, &opts))?;
        to_dict(py, s)
    }

    /// Per-unit statistics of long-format records (unit, label, value) for units 0..n_units.
    #[pyfunction]
    #[pyo3(signature = (units, labels, values, n_units, n_classes, *, negative=Some("error"),
        mutual_info=true, bins=10, binning="equal_width", miller_madow=false, shuffles=0, seed=0,
        moments=true))]
    #[allow(clippy::too_many_arguments)]
    fn long_unit_summary<'py>(
        py: Python<'py>,
        units: PyReadonlyArray1<'py, i64>,
        labels: PyReadonlyArray1<'py, i64>,
        values: PyReadonlyArray1<'py, f32>,
        n_units: usize,
        n_classes: usize,
        negative: Option<&str>,
        mutual_info: bool,
        bins: usize,
        binning: &str,
        miller_madow: bool,
        shuffles: usize,
        seed: u64,
        moments: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = options(
            n_classes,
            moments,
            negative,
            mutual_info,
            bins,
            binning,
            miller_madow,
            shuffles,
            seed,
        )?;
        let u = slice(&units, "units")?;
        let l = labels_slice(&labels)?;
        let v = slice(&values, "values")?;
        let s = py.detach(|| units::summarize_long(u, l, v, n_units, &opts))?;
        to_dict(py, s)
    }

    /// Statistics of long-format records fed in batches over several passes (see
    /// `kernels::units::long`): memory holds per-unit state only.
    #[pyclass(name = "RecordStats", module = "singledir._core")]
    struct PyRecordStats {
        inner: Option<RecordStats>,
    }

    impl PyRecordStats {
        fn stats(&mut self) -> PyResult<&mut RecordStats> {
            self.inner.as_mut().ok_or_else(|| {
                super::InputError::new_err("these record statistics are finished: make new ones")
            })
        }
    }

    #[pymethods]
    impl PyRecordStats {
        #[new]
        #[pyo3(signature = (n_classes=0, *, negative=Some("error"), mutual_info=true, bins=10,
            binning="equal_width", miller_madow=false, shuffles=0, seed=0, moments=true,
            column_budget=20_000_000))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            n_classes: usize,
            negative: Option<&str>,
            mutual_info: bool,
            bins: usize,
            binning: &str,
            miller_madow: bool,
            shuffles: usize,
            seed: u64,
            moments: bool,
            column_budget: usize,
        ) -> PyResult<Self> {
            let opts = options(
                n_classes,
                moments,
                negative,
                mutual_info,
                bins,
                binning,
                miller_madow,
                shuffles,
                seed,
            )?;
            Ok(PyRecordStats {
                inner: Some(RecordStats::new(opts, None, column_budget)?),
            })
        }

        /// The code of a layer name (codes in order of first appearance).
        fn layer_code(&mut self, name: &str) -> PyResult<usize> {
            Ok(self.stats()?.layer_code(name))
        }

        /// Whether this pass wants the sample column (the first pass checks duplicates).
        fn wants_samples(&mut self) -> PyResult<bool> {
            Ok(self.stats()?.wants_samples())
        }

        /// Feed one batch of records (layer codes from `layer_code`).
        #[pyo3(signature = (layers, units, samples, labels, values))]
        fn add(
            &mut self,
            py: Python<'_>,
            layers: PyReadonlyArray1<'_, u32>,
            units: PyReadonlyArray1<'_, i64>,
            samples: Option<PyReadonlyArray1<'_, i64>>,
            labels: PyReadonlyArray1<'_, i64>,
            values: PyReadonlyArray1<'_, f32>,
        ) -> PyResult<()> {
            let (l, u) = (slice(&layers, "layers")?, slice(&units, "units")?);
            let s = samples.as_ref().map(|s| slice(s, "samples")).transpose()?;
            let (c, v) = (labels_slice(&labels)?, slice(&values, "values")?);
            let stats = self.stats()?;
            py.detach(|| stats.add(l, u, s, c, v))?;
            Ok(())
        }

        /// Feed one batch of records in layer runs: `lengths[i]` records of layer `codes[i]`.
        #[pyo3(signature = (codes, lengths, units, samples, labels, values))]
        #[allow(clippy::too_many_arguments)]
        fn add_runs(
            &mut self,
            py: Python<'_>,
            codes: PyReadonlyArray1<'_, u32>,
            lengths: PyReadonlyArray1<'_, u64>,
            units: PyReadonlyArray1<'_, i64>,
            samples: Option<PyReadonlyArray1<'_, i64>>,
            labels: PyReadonlyArray1<'_, i64>,
            values: PyReadonlyArray1<'_, f32>,
        ) -> PyResult<()> {
            let (r, n) = (slice(&codes, "codes")?, slice(&lengths, "lengths")?);
            let u = slice(&units, "units")?;
            let s = samples.as_ref().map(|s| slice(s, "samples")).transpose()?;
            let (c, v) = (labels_slice(&labels)?, slice(&values, "values")?);
            let stats = self.stats()?;
            py.detach(|| stats.add_runs(r, n, u, s, c, v))?;
            Ok(())
        }

        /// End the pass; True when the same records are wanted once more.
        fn next_pass(&mut self, py: Python<'_>) -> PyResult<bool> {
            let stats = self.stats()?;
            Ok(py.detach(|| stats.next_pass())?)
        }

        /// One (layer name, statistics dict) per layer, in code order.
        fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
            let stats = self.inner.take().ok_or_else(|| {
                super::InputError::new_err("these record statistics are finished already")
            })?;
            let layers = stats.finish()?;
            layers
                .into_iter()
                .map(|(name, s)| Ok((name, to_dict(py, s)?)))
                .collect()
        }
    }

    /// Indices that sort scores (stable; ties keep index order).
    #[pyfunction]
    #[pyo3(signature = (scores, descending=false))]
    fn stable_order<'py>(
        py: Python<'py>,
        scores: PyReadonlyArray1<'py, f64>,
        descending: bool,
    ) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
        let s = slice(&scores, "scores")?;
        let order = py.detach(|| ordering::stable_order(s, descending))?;
        Ok(order.into_pyarray(py))
    }

    /// Pearson and Spearman correlation of x and y within each group 0..n_groups.
    #[pyfunction]
    fn group_correlations<'py>(
        py: Python<'py>,
        x: PyReadonlyArray1<'py, f64>,
        y: PyReadonlyArray1<'py, f64>,
        groups: PyReadonlyArray1<'py, i64>,
        n_groups: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (xs, ys, gs) = (slice(&x, "x")?, slice(&y, "y")?, slice(&groups, "groups")?);
        let r = py.detach(|| ordering::group_correlations(xs, ys, gs, n_groups))?;
        let d = PyDict::new(py);
        d.set_item("n", r.n.into_pyarray(py))?;
        d.set_item("pearson", r.pearson.into_pyarray(py))?;
        d.set_item("spearman", r.spearman.into_pyarray(py))?;
        Ok(d)
    }

    /// Trapezoid area under each row of y; x is shared (n_points) or per row (flattened).
    #[pyfunction]
    fn trapezoid_rows<'py>(
        py: Python<'py>,
        y: PyReadonlyArray2<'py, f64>,
        x: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, numpy::PyArray1<f64>>> {
        let shape = y.shape();
        let (n_curves, n_points) = (shape[0], shape[1]);
        let (ys, xs) = (slice(&y, "y")?, slice(&x, "x")?);
        let r = py.detach(|| ordering::trapezoid_rows(ys, n_curves, n_points, xs))?;
        Ok(r.into_pyarray(py))
    }

    /// Mean and std of each column of a (n_rows, n_cols) array.
    #[pyfunction]
    #[pyo3(signature = (values, ddof=0))]
    #[allow(clippy::type_complexity)]
    fn level_mean_std<'py>(
        py: Python<'py>,
        values: PyReadonlyArray2<'py, f64>,
        ddof: usize,
    ) -> PyResult<(
        Bound<'py, numpy::PyArray1<f64>>,
        Bound<'py, numpy::PyArray1<f64>>,
    )> {
        let shape = values.shape();
        let (n_rows, n_cols) = (shape[0], shape[1]);
        let v = slice(&values, "values")?;
        let (m, s) = py.detach(|| ordering::level_mean_std(v, n_rows, n_cols, ddof))?;
        Ok((m.into_pyarray(py), s.into_pyarray(py)))
    }

    /// Kernel view of the walk's arguments (each array C-contiguous, checked by `slice`).
    fn walk_view<'a>(
        h0: &'a PyReadonlyArray2<'_, f32>,
        layers: &'a [(PyReadonlyArray2<'_, f32>, PyReadonlyArray1<'_, f32>)],
        site_layers: &'a PyReadonlyArray1<'_, i64>,
        fills: &'a [PyReadonlyArray1<'_, f32>],
        labels: &'a PyReadonlyArray1<'_, i64>,
    ) -> PyResult<walk::Walk<'a>> {
        let maps = layers
            .iter()
            .map(|(w, b)| {
                Ok(walk::Affine {
                    weight: slice(w, "weight")?,
                    bias: slice(b, "bias")?,
                    n_out: w.shape()[0],
                    n_in: w.shape()[1],
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(walk::Walk {
            h0: slice(h0, "h0")?,
            n_samples: h0.shape()[0],
            layers: maps,
            site_layers: slice(site_layers, "site_layers")?,
            fills: fills
                .iter()
                .map(|f| slice(f, "fill"))
                .collect::<PyResult<Vec<_>>>()?,
            labels: labels_slice(labels)?,
        })
    }

    /// Cumulative-ablation curves of an MLP chain: correct counts and summed loss (O, L).
    #[pyfunction]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn mlp_walk_curves<'py>(
        py: Python<'py>,
        h0: PyReadonlyArray2<'py, f32>,
        layers: Vec<(PyReadonlyArray2<'py, f32>, PyReadonlyArray1<'py, f32>)>,
        site_layers: PyReadonlyArray1<'py, i64>,
        fills: Vec<PyReadonlyArray1<'py, f32>>,
        orders: PyReadonlyArray2<'py, i64>,
        levels: PyReadonlyArray1<'py, i64>,
        labels: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<(
        Bound<'py, numpy::PyArray2<i64>>,
        Bound<'py, numpy::PyArray2<f64>>,
    )> {
        let view = walk_view(&h0, &layers, &site_layers, &fills, &labels)?;
        let n_orders = orders.shape()[0];
        let (o, l) = (slice(&orders, "orders")?, slice(&levels, "levels")?);
        let r = py.detach(|| walk::mlp_curves(&view, o, n_orders, l))?;
        let n_levels = l.len();
        Ok((
            r.correct.into_pyarray(py).reshape([n_orders, n_levels])?,
            r.loss_sum.into_pyarray(py).reshape([n_orders, n_levels])?,
        ))
    }

    /// The footer's length from the last 8 bytes of a parquet file.
    #[pyfunction]
    fn parquet_footer_length(tail: &[u8]) -> PyResult<usize> {
        Ok(parquet_meta::footer_length(tail)?)
    }

    /// (rows, the one value of `column` when its statistics prove one) per row group.
    #[pyfunction]
    fn parquet_row_group_values<'py>(
        py: Python<'py>,
        footer: &[u8],
        column: &str,
    ) -> PyResult<Vec<(i64, Option<Bound<'py, PyBytes>>)>> {
        let groups = py.detach(|| parquet_meta::row_group_stats(footer, column))?;
        Ok(groups
            .iter()
            .map(|g| (g.num_rows, g.single_value().map(|v| PyBytes::new(py, v))))
            .collect())
    }

    /// Single-unit importance of an MLP chain: per pooled unit, correct count, summed loss
    /// and per-class correct counts (n_units, n_classes).
    #[pyfunction]
    #[allow(clippy::type_complexity)]
    fn mlp_walk_importance<'py>(
        py: Python<'py>,
        h0: PyReadonlyArray2<'py, f32>,
        layers: Vec<(PyReadonlyArray2<'py, f32>, PyReadonlyArray1<'py, f32>)>,
        site_layers: PyReadonlyArray1<'py, i64>,
        fills: Vec<PyReadonlyArray1<'py, f32>>,
        labels: PyReadonlyArray1<'py, i64>,
        n_classes: usize,
    ) -> PyResult<(
        Bound<'py, numpy::PyArray1<i64>>,
        Bound<'py, numpy::PyArray1<f64>>,
        Bound<'py, numpy::PyArray2<i64>>,
    )> {
        let view = walk_view(&h0, &layers, &site_layers, &fills, &labels)?;
        let r = py.detach(|| walk::mlp_importance(&view, n_classes))?;
        let n_units = r.correct.len();
        Ok((
            r.correct.into_pyarray(py),
            r.loss_sum.into_pyarray(py),
            r.per_class_correct
                .into_pyarray(py)
                .reshape([n_units, n_classes])?,
        ))
    }
}
