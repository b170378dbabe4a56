//! Calibration data: where the samples a model is calibrated on come from, as a
//! [`CalibrationSet`] that yields one sample (a `Vec<Tensor>` in graph-input order) at a time.
//!
//! Sources (`kiln quantize --calibration PATH`):
//! - a directory of `.npy` files, one sample each; for a model with several inputs, one
//!   subdirectory per input name, paired in sorted file-name order;
//! - an `.npz` file whose arrays are named after the inputs, samples stacked along axis 0;
//! - a directory of PNG/JPEG images with a [`Preprocess`] (resize, mean/std, layout);
//! - seeded random normal data ([`CalibrationSet::random`]), only when asked for explicitly:
//!   its ranges say nothing about real inputs, so callers must warn.
//!
//! Only the file list (or, for `.npz`, the archive's arrays) is held; each sample is read
//! when asked for.

use kiln_ir::npy::{read_npy_file, read_npz_file, NpyError};
use kiln_ir::{DType, Graph, Tensor, TensorData};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// Why calibration data could not be read, naming the file, the input and what was expected.
#[derive(Debug, Error)]
pub enum CalibError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Npy { path: PathBuf, source: NpyError },
    #[error("{path}: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error(
        "{path}: not a directory or an .npz file (calibration data is a directory of .npy \
         files, one subdirectory of .npy files per input, an .npz, or a directory of images)"
    )]
    UnknownSource { path: PathBuf },
    #[error("{path}: {what}")]
    Layout { path: PathBuf, what: String },
    #[error("{origin}: input '{input}' expects {expected}, got {got}")]
    Mismatch {
        origin: String,
        input: String,
        expected: String,
        got: String,
    },
    #[error(
        "{dir}: images need a --preprocess (e.g. \"resize=224,224 mean=0.485,0.456,0.406 \
         std=0.229,0.224,0.225 layout=nchw\")"
    )]
    PreprocessRequired { dir: PathBuf },
    #[error("preprocess '{text}': {reason}")]
    Preprocess { text: String, reason: String },
    #[error("input '{input}' ({ty}) cannot take images: {reason}")]
    ImageInput {
        input: String,
        ty: String,
        reason: String,
    },
    #[error(
        "input '{input}' is {dtype}: random calibration data can only be generated for f32 inputs"
    )]
    RandomUnsupported { input: String, dtype: DType },
    #[error("sample {index} does not exist (the set has {len})")]
    OutOfRange { index: usize, len: usize },
}

/// A graph input as calibration data must match it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl InputSpec {
    fn describe(&self) -> String {
        describe(self.dtype, &self.shape)
    }
}

fn describe(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(","))
}

/// The graph's inputs in order.
pub fn input_specs(graph: &Graph) -> Vec<InputSpec> {
    graph
        .inputs()
        .iter()
        .map(|&v| {
            let ty = graph.value_type(v);
            InputSpec {
                name: graph.value_name(v).to_string(),
                dtype: ty.dtype,
                shape: ty.shape.clone(),
            }
        })
        .collect()
}

/// Memory layout of an image input.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// Channel order of a 3-channel image input (PaddleOCR and other OpenCV-trained models
/// expect BGR).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// How an image becomes an input tensor: decode, convert to RGB (or grey for 1-channel
/// inputs), resize (bilinear), then per channel `((pixel · scale) − mean) / std` with pixels
/// on the 0..255 scale, laid out as `layout`.
///
/// Text form: `resize=H,W mean=a,b,c std=a,b,c layout=nchw|nhwc scale=S channels=rgb|bgr`,
/// every key optional: `resize` defaults to the input's own height and width (and must equal
/// them when given: shapes are static), `mean` to 0, `std` to 1 (one value or one per
/// channel), `layout` to nchw, `scale` to 1/255, `channels` to rgb.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Option<(usize, usize)>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub scale: f32,
    pub layout: Layout,
    pub channels: ChannelOrder,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: None,
            mean: vec![0.0],
            std: vec![1.0],
            scale: 1.0 / 255.0,
            layout: Layout::Nchw,
            channels: ChannelOrder::Rgb,
        }
    }
}

impl FromStr for Preprocess {
    type Err = CalibError;

    fn from_str(text: &str) -> Result<Preprocess, CalibError> {
        let err = |reason: String| CalibError::Preprocess {
            text: text.to_string(),
            reason,
        };
        let floats = |key: &str, v: &str| -> Result<Vec<f32>, CalibError> {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| err(format!("{key}: '{x}' is not a finite number")))
                })
                .collect()
        };
        let mut p = Preprocess::default();
        for item in text.split_whitespace() {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| err(format!("'{item}' is not key=value")))?;
            match key {
                "resize" => {
                    let dims: Vec<usize> = value
                        .split(',')
                        .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
                        .collect::<Option<_>>()
                        .ok_or_else(|| err(format!("resize: '{value}' is not H,W")))?;
                    let [h, w] = dims[..] else {
                        return Err(err(format!("resize: '{value}' is not H,W")));
                    };
                    p.resize = Some((h, w));
                }
                "mean" => p.mean = floats(key, value)?,
                "std" => {
                    p.std = floats(key, value)?;
                    if p.std.contains(&0.0) {
                        return Err(err("std: a standard deviation of 0".to_string()));
                    }
                }
                "scale" => {
                    p.scale = floats(key, value)?
                        .into_iter()
                        .next()
                        .filter(|_| !value.contains(','))
                        .ok_or_else(|| err(format!("scale: '{value}' is not one number")))?
                }
                "layout" => {
                    p.layout = match value {
                        "nchw" | "NCHW" => Layout::Nchw,
                        "nhwc" | "NHWC" => Layout::Nhwc,
                        _ => return Err(err(format!("layout: '{value}' (nchw or nhwc)"))),
                    }
                }
                "channels" => {
                    p.channels = match value {
                        "rgb" | "RGB" => ChannelOrder::Rgb,
                        "bgr" | "BGR" => ChannelOrder::Bgr,
                        _ => return Err(err(format!("channels: '{value}' (rgb or bgr)"))),
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown key '{key}' (resize, mean, std, layout, scale, channels)"
                    )))
                }
            }
        }
        Ok(p)
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        if let Some((h, w)) = self.resize {
            write!(f, "resize={h},{w} ")?;
        }
        write!(
            f,
            "mean={} std={} scale={} layout={} channels={}",
            list(&self.mean),
            list(&self.std),
            self.scale,
            match self.layout {
                Layout::Nchw => "nchw",
                Layout::Nhwc => "nhwc",
            },
            match self.channels {
                ChannelOrder::Rgb => "rgb",
                ChannelOrder::Bgr => "bgr",
            }
        )
    }
}

/// A small deterministic generator (SplitMix64) for random calibration data and tests: the
/// same seed gives the same samples on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn next_normal(&mut self) -> f32 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln never sees 0
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Where the samples come from.
#[derive(Clone, Debug)]
enum Source {
    /// `files[sample][input]`.
    NpyFiles {
        files: Vec<Vec<PathBuf>>,
    },
    /// One stacked array per input; sample `i` is rows `[i·rows, (i+1)·rows)` of each.
    Npz {
        path: PathBuf,
        arrays: Vec<(Tensor, usize)>,
    },
    Images {
        files: Vec<PathBuf>,
        preprocess: Preprocess,
        /// Images per sample: the input's batch dimension.
        batch: usize,
    },
    Random {
        seed: u64,
    },
}

/// A calibration data set: `len()` samples, each a `Vec<Tensor>` matching the graph inputs
/// in order, read on demand with [`CalibrationSet::get`] or [`CalibrationSet::iter`].
#[derive(Clone, Debug)]
pub struct CalibrationSet {
    inputs: Vec<InputSpec>,
    source: Source,
    len: usize,
    description: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CalibError + '_ {
    move |source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Files directly in `dir` with one of `exts`, sorted by name; hidden files are skipped.
fn files_in(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, CalibError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.is_file() && has_extension(&path, exts) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl CalibrationSet {
    /// Open `path` as calibration data for a graph with `inputs`: an `.npz` file, or a
    /// directory holding one subdirectory of `.npy` files per input, `.npy` files (single
    /// input), or images (single input; needs `preprocess`).
    pub fn open(
        path: &Path,
        inputs: &[InputSpec],
        preprocess: Option<&Preprocess>,
    ) -> Result<CalibrationSet, CalibError> {
        if path.is_file() && has_extension(path, &["npz"]) {
            return CalibrationSet::npz(path, inputs);
        }
        if !path.is_dir() {
            return Err(CalibError::UnknownSource {
                path: path.to_path_buf(),
            });
        }
        let per_input: Vec<PathBuf> = inputs.iter().map(|i| path.join(&i.name)).collect();
        if !inputs.is_empty() && per_input.iter().all(|d| d.is_dir()) {
            return CalibrationSet::npy_dirs(path, inputs);
        }
        let npy = files_in(path, &["npy"])?;
        let images = files_in(path, &IMAGE_EXTENSIONS)?;
        let layout = |what: String| CalibError::Layout {
            path: path.to_path_buf(),
            what,
        };
        if inputs.len() != 1 && (!npy.is_empty() || !images.is_empty()) {
            let missing: Vec<String> = inputs
                .iter()
                .zip(&per_input)
                .filter(|(_, d)| !d.is_dir())
                .map(|(i, _)| format!("{}/", i.name))
                .collect();
            return Err(layout(format!(
                "the model has {} inputs ({}): put each input's .npy files in a subdirectory \
                 named after it (missing: {})",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                missing.join(", ")
            )));
        }
        if !npy.is_empty() {
            let description = format!("{} .npy files in {}", npy.len(), path.display());
            return Ok(CalibrationSet {
                inputs: inputs.to_vec(),
                len: npy.len(),
                source: Source::NpyFiles {
                    files: npy.into_iter().map(|f| vec![f]).collect(),
                },
                description,
            });
        }
        if !images.is_empty() {
            let preprocess = preprocess.ok_or_else(|| CalibError::PreprocessRequired {
                dir: path.to_path_buf(),
            })?;
            return CalibrationSet::images(path, images, &inputs[0], preprocess);
        }
        Err(layout(
            "no .npy files, per-input subdirectories or images (.png, .jpg) found".to_string(),
        ))
    }

    /// One subdirectory of `.npy` files per input, paired in sorted order.
    fn npy_dirs(dir: &Path, inputs: &[InputSpec]) -> Result<CalibrationSet, CalibError> {
        let per_input: Vec<Vec<PathBuf>> = inputs
            .iter()
            .map(|i| files_in(&dir.join(&i.name), &["npy"]))
            .collect::<Result<_, _>>()?;
        let len = per_input[0].len();
        if per_input.iter().any(|f| f.len() != len) || len == 0 {
            let counts: Vec<String> = inputs
                .iter()
                .zip(&per_input)
                .map(|(i, f)| format!("{}/ has {}", i.name, f.len()))
                .collect();
            return Err(CalibError::Layout {
                path: dir.to_path_buf(),
                what: format!(
                    "every input directory needs the same, non-zero number of .npy files: {}",
                    counts.join(", ")
                ),
            });
        }
        let files = (0..len)
            .map(|s| per_input.iter().map(|f| f[s].clone()).collect())
            .collect();
        Ok(CalibrationSet {
            inputs: inputs.to_vec(),
            len,
            source: Source::NpyFiles { files },
            description: format!(
                "{len} samples of {} inputs in {}",
                inputs.len(),
                dir.display()
            ),
        })
    }

    /// An `.npz` whose arrays are named after the inputs. An array holds the samples
    /// stacked along axis 0: either `[S, ...input shape]` or, concatenating batches, a
    /// multiple of the input's batch size along axis 0 with the input's other dimensions.
    pub fn npz(path: &Path, inputs: &[InputSpec]) -> Result<CalibrationSet, CalibError> {
        let mut arrays = read_npz_file(path).map_err(|source| CalibError::Npy {
            path: path.to_path_buf(),
            source,
        })?;
        let layout = |what: String| CalibError::Layout {
            path: path.to_path_buf(),
            what,
        };
        let names = |v: &[(String, Tensor)]| {
            v.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let input_names = inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Some((extra, _)) = arrays
            .iter()
            .find(|(n, _)| !inputs.iter().any(|i| &i.name == n))
        {
            return Err(layout(format!(
                "array '{extra}' is not a model input (inputs: {input_names})"
            )));
        }
        let mut stacked = Vec::new();
        let mut len = None;
        for input in inputs {
            let Some(pos) = arrays.iter().position(|(n, _)| n == &input.name) else {
                return Err(layout(format!(
                    "no array named '{}' (arrays: {}; inputs: {input_names})",
                    input.name,
                    names(&arrays)
                )));
            };
            let (_, t) = arrays.swap_remove(pos);
            let origin = format!("{}['{}']", path.display(), input.name);
            if t.dtype() != input.dtype {
                return Err(CalibError::Mismatch {
                    origin,
                    input: input.name.clone(),
                    expected: format!("{} samples", input.describe()),
                    got: describe(t.dtype(), t.shape()),
                });
            }
            // rows of the stacked array per sample
            let (samples, rows) =
                if t.shape().len() == input.shape.len() + 1 && t.shape()[1..] == input.shape[..] {
                    (t.shape()[0], 1)
                } else if !input.shape.is_empty()
                    && t.shape().len() == input.shape.len()
                    && t.shape()[1..] == input.shape[1..]
                    && input.shape[0] > 0
                    && t.shape()[0] % input.shape[0] == 0
                {
                    (t.shape()[0] / input.shape[0], input.shape[0])
                } else {
                    return Err(CalibError::Mismatch {
                        origin,
                        input: input.name.clone(),
                        expected: format!(
                            "samples of {} stacked along axis 0 ([S,{}] or a multiple of {} rows)",
                            input.describe(),
                            input
                                .shape
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            input.shape.first().copied().unwrap_or(1)
                        ),
                        got: describe(t.dtype(), t.shape()),
                    });
                };
            if let Some(l) = len.filter(|&l| l != samples) {
                return Err(layout(format!(
                    "inputs hold different numbers of samples: {l} before '{}', which has {samples}",
                    input.name
                )));
            }
            len = Some(samples);
            stacked.push((t, rows));
        }
        let len = len.unwrap_or(0);
        if len == 0 {
            return Err(layout("holds no samples".to_string()));
        }
        Ok(CalibrationSet {
            inputs: inputs.to_vec(),
            len,
            source: Source::Npz {
                path: path.to_path_buf(),
                arrays: stacked,
            },
            description: format!("{len} samples from {}", path.display()),
        })
    }

    /// Images in `dir` for an image input of shape `[N,C,H,W]` (nchw) or `[N,H,W,C]` (nhwc),
    /// C = 1 or 3, f32; each sample takes `N` consecutive images.
    fn images(
        dir: &Path,
        files: Vec<PathBuf>,
        input: &InputSpec,
        preprocess: &Preprocess,
    ) -> Result<CalibrationSet, CalibError> {
        let (batch, channels, height, width) = image_geometry(input, preprocess)?;
        for (what, v) in [("mean", &preprocess.mean), ("std", &preprocess.std)] {
            if v.len() != 1 && v.len() != channels {
                return Err(CalibError::ImageInput {
                    input: input.name.clone(),
                    ty: input.describe(),
                    reason: format!("{what} has {} values for {channels} channels", v.len()),
                });
            }
        }
        if let Some((h, w)) = preprocess.resize {
            if (h, w) != (height, width) {
                return Err(CalibError::ImageInput {
                    input: input.name.clone(),
                    ty: input.describe(),
                    reason: format!(
                        "resize={h},{w} differs from the input's {height}x{width} (fix the \
                         input shape, or resize to it)"
                    ),
                });
            }
        }
        if !files.len().is_multiple_of(batch) {
            return Err(CalibError::Layout {
                path: dir.to_path_buf(),
                what: format!(
                    "{} images do not divide into batches of {batch} (the input's batch \
                     dimension): {} left over",
                    files.len(),
                    files.len() % batch
                ),
            });
        }
        let len = files.len() / batch;
        Ok(CalibrationSet {
            inputs: vec![input.clone()],
            len,
            description: format!("{} images in {} ({preprocess})", files.len(), dir.display()),
            source: Source::Images {
                files,
                preprocess: preprocess.clone(),
                batch,
            },
        })
    }

    /// `count` samples of standard normal values for f32 inputs, reproducible from `seed`.
    /// Ranges calibrated on noise do not reflect real data: only use this when asked for,
    /// and warn.
    pub fn random(
        inputs: &[InputSpec],
        count: usize,
        seed: u64,
    ) -> Result<CalibrationSet, CalibError> {
        if let Some(i) = inputs.iter().find(|i| i.dtype != DType::F32) {
            return Err(CalibError::RandomUnsupported {
                input: i.name.clone(),
                dtype: i.dtype,
            });
        }
        Ok(CalibrationSet {
            inputs: inputs.to_vec(),
            len: count,
            source: Source::Random { seed },
            description: format!("{count} random normal samples (seed {seed})"),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the data is random noise (callers warn).
    pub fn is_random(&self) -> bool {
        matches!(self.source, Source::Random { .. })
    }

    /// One line for logs: what the set is and where it comes from.
    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Sample `index`: one tensor per input, in input order, checked against the inputs.
    pub fn get(&self, index: usize) -> Result<Vec<Tensor>, CalibError> {
        if index >= self.len {
            return Err(CalibError::OutOfRange {
                index,
                len: self.len,
            });
        }
        match &self.source {
            Source::NpyFiles { files } => files[index]
                .iter()
                .zip(&self.inputs)
                .map(|(path, input)| {
                    let t = read_npy_file(path).map_err(|source| CalibError::Npy {
                        path: path.clone(),
                        source,
                    })?;
                    conform(t, input, &path.display().to_string())
                })
                .collect(),
            Source::Npz { path, arrays } => arrays
                .iter()
                .zip(&self.inputs)
                .map(|((t, rows), input)| {
                    let origin = format!("{}['{}'] sample {index}", path.display(), input.name);
                    // either way the rows hold exactly one input's worth of elements
                    let sample = slice_rows(t, index * rows, *rows)
                        .and_then(|s| s.reshaped(input.shape.clone()).map_err(|e| e.to_string()))
                        .map_err(|e| mismatch(input, &origin, e))?;
                    conform(sample, input, &origin)
                })
                .collect(),
            Source::Images {
                files,
                preprocess,
                batch,
            } => {
                let input = &self.inputs[0];
                let mut data = Vec::with_capacity(input.shape.iter().product());
                for path in &files[index * batch..(index + 1) * batch] {
                    data.extend(load_image(path, input, preprocess)?);
                }
                let t = Tensor::from_f32(input.shape.clone(), data).map_err(|e| {
                    mismatch(
                        input,
                        &files[index * batch].display().to_string(),
                        e.to_string(),
                    )
                })?;
                Ok(vec![t])
            }
            Source::Random { seed } => {
                // one stream per sample, so that any sample can be drawn on its own
                let mut rng =
                    SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
                self.inputs
                    .iter()
                    .map(|input| {
                        let n = input.shape.iter().product();
                        let data = (0..n).map(|_| rng.next_normal()).collect();
                        Tensor::from_f32(input.shape.clone(), data)
                            .map_err(|e| mismatch(input, "random", e.to_string()))
                    })
                    .collect()
            }
        }
    }

    /// The samples in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<Vec<Tensor>, CalibError>> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

fn mismatch(input: &InputSpec, origin: &str, got: String) -> CalibError {
    CalibError::Mismatch {
        origin: origin.to_string(),
        input: input.name.clone(),
        expected: input.describe(),
        got,
    }
}

/// Check a loaded tensor against its input: same dtype and shape, or the shape without a
/// leading batch dimension of 1 (a common way to save single images).
fn conform(t: Tensor, input: &InputSpec, origin: &str) -> Result<Tensor, CalibError> {
    let shape_ok = t.shape() == input.shape.as_slice();
    let unbatched = input.shape.first() == Some(&1) && t.shape() == &input.shape[1..];
    if t.dtype() == input.dtype && (shape_ok || unbatched) {
        if shape_ok {
            return Ok(t);
        }
        return t
            .reshaped(input.shape.clone())
            .map_err(|e| mismatch(input, origin, e.to_string()));
    }
    Err(mismatch(input, origin, describe(t.dtype(), t.shape())))
}

/// Rows `[start, start + rows)` along axis 0 of `t`.
fn slice_rows(t: &Tensor, start: usize, rows: usize) -> Result<Tensor, String> {
    let row: usize = t.shape()[1..].iter().product();
    let (a, b) = (start * row, (start + rows) * row);
    if b > t.numel() {
        return Err(format!("rows {start}..{} of {:?}", start + rows, t.shape()));
    }
    let data = match t.data() {
        TensorData::F32(v) => TensorData::F32(v[a..b].to_vec()),
        TensorData::F16(v) => TensorData::F16(v[a..b].to_vec()),
        TensorData::I8(v) => TensorData::I8(v[a..b].to_vec()),
        TensorData::U8(v) => TensorData::U8(v[a..b].to_vec()),
        TensorData::I32(v) => TensorData::I32(v[a..b].to_vec()),
        TensorData::I64(v) => TensorData::I64(v[a..b].to_vec()),
        TensorData::Bool(v) => TensorData::Bool(v[a..b].to_vec()),
    };
    let mut shape = t.shape().to_vec();
    shape[0] = rows;
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// `(batch, channels, height, width)` of an image input.
fn image_geometry(
    input: &InputSpec,
    preprocess: &Preprocess,
) -> Result<(usize, usize, usize, usize), CalibError> {
    let bad = |reason: String| CalibError::ImageInput {
        input: input.name.clone(),
        ty: input.describe(),
        reason,
    };
    if input.dtype != DType::F32 {
        return Err(bad("image inputs must be f32".to_string()));
    }
    let [n, a, b, c] = input.shape[..] else {
        return Err(bad(
            "image inputs must have rank 4 ([N,C,H,W] or [N,H,W,C])".to_string(),
        ));
    };
    let (channels, h, w) = match preprocess.layout {
        Layout::Nchw => (a, b, c),
        Layout::Nhwc => (c, a, b),
    };
    if channels != 1 && channels != 3 {
        return Err(bad(format!(
            "{channels} channels in layout {:?} (1 or 3 expected; is the layout right?)",
            preprocess.layout
        )));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(bad("empty dimensions".to_string()));
    }
    Ok((n, channels, h, w))
}

/// Decode, resize and normalize one image into `C·H·W` values in the input's layout.
fn load_image(path: &Path, input: &InputSpec, p: &Preprocess) -> Result<Vec<f32>, CalibError> {
    let (_, channels, h, w) = image_geometry(input, p)?;
    let img = image::ImageReader::open(path)
        .map_err(io_err(path))?
        .with_guessed_format()
        .map_err(io_err(path))?
        .decode()
        .map_err(|source| CalibError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    let (w32, h32) = (w as u32, h as u32);
    use image::imageops::{resize, FilterType};
    // resize in f32 ([0, 1]) so that the result is not rounded back to 8 bits; the
    // triangle filter is bilinear (and, when shrinking, widened to average like PIL's)
    let pixels: Vec<f32> = if channels == 3 {
        let rgb = img.to_rgb32f();
        let rgb = if rgb.dimensions() == (w32, h32) {
            rgb
        } else {
            resize(&rgb, w32, h32, FilterType::Triangle)
        };
        rgb.into_raw()
    } else {
        let grey = img.to_luma32f();
        let grey = if grey.dimensions() == (w32, h32) {
            grey
        } else {
            resize(&grey, w32, h32, FilterType::Triangle)
        };
        grey.into_raw()
    };
    let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    let mut out = vec![0.0f32; channels * h * w];
    for y in 0..h {
        for x in 0..w {
            for c in 0..channels {
                // c is the channel in the tensor; pick the matching image channel
                let src = match p.channels {
                    ChannelOrder::Bgr if channels == 3 => 2 - c,
                    _ => c,
                };
                let raw = pixels[(y * w + x) * channels + src] * 255.0;
                let v = (raw * p.scale - at(&p.mean, c)) / at(&p.std, c);
                let dst = match p.layout {
                    Layout::Nchw => (c * h + y) * w + x,
                    Layout::Nhwc => (y * w + x) * channels + c,
                };
                out[dst] = v;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_ir::npy::write_npy_file;

    /// A fresh, empty directory under the system temp dir, removed when dropped.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "kiln-quant-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(name: &str, shape: &[usize]) -> InputSpec {
        InputSpec {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
        }
    }

    fn f32s(shape: &[usize], start: f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), (0..n).map(|i| start + i as f32).collect()).unwrap()
    }

    #[test]
    fn npy_directory_single_input() {
        let dir = TempDir::new("npy1");
        write_npy_file(dir.0.join("b.npy"), &f32s(&[1, 2], 10.0)).unwrap();
        write_npy_file(dir.0.join("a.npy"), &f32s(&[2], 0.0)).unwrap(); // no batch dim
        std::fs::write(dir.0.join("notes.txt"), "ignored").unwrap();
        let set = CalibrationSet::open(&dir.0, &[spec("x", &[1, 2])], None).unwrap();
        assert_eq!(set.len(), 2);
        let samples: Vec<Vec<Tensor>> = set.iter().collect::<Result<_, _>>().unwrap();
        // sorted by name: a.npy first, reshaped to [1, 2]
        assert_eq!(samples[0][0], f32s(&[1, 2], 0.0));
        assert_eq!(samples[1][0], f32s(&[1, 2], 10.0));
        // a file of the wrong shape is named in the error with what was expected
        write_npy_file(dir.0.join("c.npy"), &f32s(&[3], 0.0)).unwrap();
        let set = CalibrationSet::open(&dir.0, &[spec("x", &[1, 2])], None).unwrap();
        let msg = set.get(2).unwrap_err().to_string();
        assert!(
            msg.contains("c.npy")
                && msg.contains("'x'")
                && msg.contains("f32[1,2]")
                && msg.contains("f32[3]"),
            "{msg}"
        );
    }

    #[test]
    fn npy_subdirectories_for_several_inputs() {
        let dir = TempDir::new("npy2");
        let inputs = [spec("a", &[2]), spec("b", &[1])];
        // several .npy files at the top level of a two-input model: a layout error
        write_npy_file(dir.0.join("s.npy"), &f32s(&[2], 0.0)).unwrap();
        let msg = CalibrationSet::open(&dir.0, &inputs, None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("subdirectory") && msg.contains("a/, b/"),
            "{msg}"
        );
        for (name, shape) in [("a", [2usize]), ("b", [1])] {
            std::fs::create_dir(dir.0.join(name)).unwrap();
            for s in 0..3 {
                let t = f32s(&shape, 100.0 * s as f32);
                write_npy_file(dir.0.join(name).join(format!("{s}.npy")), &t).unwrap();
            }
        }
        let set = CalibrationSet::open(&dir.0, &inputs, None).unwrap();
        assert_eq!(set.len(), 3);
        let s2 = set.get(2).unwrap();
        assert_eq!(
            (s2[0].clone(), s2[1].clone()),
            (f32s(&[2], 200.0), f32s(&[1], 200.0))
        );
        // unequal file counts
        std::fs::remove_file(dir.0.join("b").join("0.npy")).unwrap();
        let msg = CalibrationSet::open(&dir.0, &inputs, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a/ has 3, b/ has 2"), "{msg}");
    }

    /// A minimal stored (uncompressed) zip holding `.npy` members, as `np.savez` writes.
    fn write_npz(path: &Path, members: &[(&str, &Tensor)]) {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, t) in members {
            let data = kiln_ir::npy::write_npy(t);
            let fname = format!("{name}.npy");
            let crc = crc32(&data);
            let offset = out.len() as u32;
            let header = |sig: u32, central: bool| {
                let mut h = Vec::new();
                h.extend(sig.to_le_bytes());
                if central {
                    h.extend(20u16.to_le_bytes()); // version made by
                }
                h.extend(20u16.to_le_bytes()); // version needed
                h.extend(0u16.to_le_bytes()); // flags
                h.extend(0u16.to_le_bytes()); // stored
                h.extend(0u32.to_le_bytes()); // time, date
                h.extend(crc.to_le_bytes());
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((fname.len() as u16).to_le_bytes());
                h.extend(0u16.to_le_bytes()); // extra
                if central {
                    h.extend([0u8; 6]); // comment len, disk, internal attrs
                    h.extend(0u32.to_le_bytes()); // external attrs
                    h.extend(offset.to_le_bytes());
                }
                h.extend(fname.as_bytes());
                h
            };
            out.extend(header(0x0403_4b50, false));
            out.extend(&data);
            central.extend(header(0x0201_4b50, true));
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((members.len() as u16).to_le_bytes());
        out.extend((members.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        std::fs::write(path, out).unwrap();
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn npz_stacked_samples() {
        let dir = TempDir::new("npz");
        let path = dir.0.join("calib.npz");
        // x: [1, 2] input, 3 samples stacked as [3, 1, 2]; y: [2] input as 3 rows of [2]
        // concatenated along axis 0 ([6] would be ambiguous, so y is [1] per sample → [3])
        let x = f32s(&[3, 1, 2], 0.0);
        let y = f32s(&[3], 50.0);
        write_npz(&path, &[("x", &x), ("y", &y)]);
        let inputs = [spec("x", &[1, 2]), spec("y", &[1])];
        let set = CalibrationSet::open(&path, &inputs, None).unwrap();
        assert_eq!(set.len(), 3);
        let s1 = set.get(1).unwrap();
        assert_eq!(s1[0], f32s(&[1, 2], 2.0));
        assert_eq!(s1[1], f32s(&[1], 51.0));
        // a missing input and an extra array are named
        write_npz(&path, &[("x", &x)]);
        let msg = CalibrationSet::open(&path, &inputs, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no array named 'y'"), "{msg}");
        write_npz(&path, &[("x", &x), ("y", &y), ("z", &y)]);
        let msg = CalibrationSet::open(&path, &inputs, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'z' is not a model input"), "{msg}");
        // wrong trailing shape
        write_npz(&path, &[("x", &f32s(&[3, 1, 5], 0.0)), ("y", &y)]);
        let msg = CalibrationSet::open(&path, &inputs, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'x'") && msg.contains("f32[3,1,5]"), "{msg}");
    }

    #[test]
    fn preprocess_parses_and_prints() {
        let p: Preprocess = "resize=32,48 mean=0.485,0.456,0.406 std=0.229,0.224,0.225 layout=nhwc channels=bgr scale=1"
            .parse()
            .unwrap();
        assert_eq!(p.resize, Some((32, 48)));
        assert_eq!(p.mean, vec![0.485, 0.456, 0.406]);
        assert_eq!(
            (p.layout, p.channels, p.scale),
            (Layout::Nhwc, ChannelOrder::Bgr, 1.0)
        );
        assert_eq!(p.to_string().parse::<Preprocess>().unwrap(), p);
        for bad in [
            "resize=3",
            "mean=a",
            "layout=chw",
            "foo=1",
            "std=0",
            "resize",
        ] {
            assert!(bad.parse::<Preprocess>().is_err(), "{bad}");
        }
        assert_eq!("".parse::<Preprocess>().unwrap(), Preprocess::default());
    }

    #[test]
    fn images_are_decoded_normalized_and_laid_out() {
        let dir = TempDir::new("img");
        // a 2x2 RGB PNG: pixel (x, y) = (10·x, 20·y, 200)
        let img =
            image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([10 * x as u8, 20 * y as u8, 200]));
        img.save(dir.0.join("a.png")).unwrap();
        let input = spec("img", &[1, 3, 2, 2]);
        assert!(matches!(
            CalibrationSet::open(&dir.0, std::slice::from_ref(&input), None),
            Err(CalibError::PreprocessRequired { .. })
        ));
        // (pixel/255 − 0.5)/0.25, no resize needed
        let p: Preprocess = "mean=0.5 std=0.25".parse().unwrap();
        let set = CalibrationSet::open(&dir.0, std::slice::from_ref(&input), Some(&p)).unwrap();
        let t = set.get(0).unwrap().remove(0);
        let v = t.as_f32().unwrap();
        let expect = |px: f32| (px * 255.0 * (1.0 / 255.0) - 0.5) / 0.25;
        // nchw: channel 0 (red) at x=1,y=0 is 10; channel 1 (green) at y=1 is 20; blue 200
        assert_eq!(v[1], expect(10.0 / 255.0));
        assert_eq!(v[4 + 2], expect(20.0 / 255.0));
        assert_eq!(v[8], expect(200.0 / 255.0));
        // bgr + nhwc: first pixel is (b, g, r) = (200, 0, 0)
        let p: Preprocess = "mean=0.5 std=0.25 layout=nhwc channels=bgr"
            .parse()
            .unwrap();
        let nhwc = spec("img", &[1, 2, 2, 3]);
        let set = CalibrationSet::open(&dir.0, std::slice::from_ref(&nhwc), Some(&p)).unwrap();
        let t = set.get(0).unwrap().remove(0);
        assert_eq!(
            &t.as_f32().unwrap()[..3],
            &[expect(200.0 / 255.0), expect(0.0), expect(0.0)]
        );
        // resizing a uniform image keeps its value; a resize that differs from the input
        // shape is an error
        let flat = image::RgbImage::from_pixel(7, 5, image::Rgb([51, 102, 153]));
        std::fs::remove_file(dir.0.join("a.png")).unwrap();
        flat.save(dir.0.join("b.png")).unwrap();
        let p = Preprocess::default();
        let small = spec("img", &[1, 3, 3, 4]);
        let t = CalibrationSet::open(&dir.0, std::slice::from_ref(&small), Some(&p))
            .unwrap()
            .get(0)
            .unwrap()
            .remove(0);
        for (c, px) in [51.0f32, 102.0, 153.0].into_iter().enumerate() {
            for &v in &t.as_f32().unwrap()[c * 12..(c + 1) * 12] {
                assert!((v - px / 255.0).abs() < 1e-6, "{v} vs {}", px / 255.0);
            }
        }
        let p: Preprocess = "resize=5,5".parse().unwrap();
        let msg = CalibrationSet::open(&dir.0, std::slice::from_ref(&small), Some(&p))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("resize=5,5"), "{msg}");
        // an image that cannot be decoded is named
        std::fs::write(dir.0.join("c.png"), b"not a png").unwrap();
        let set = CalibrationSet::open(
            &dir.0,
            std::slice::from_ref(&small),
            Some(&Preprocess::default()),
        )
        .unwrap();
        let msg = set.get(1).unwrap_err().to_string();
        assert!(msg.contains("c.png"), "{msg}");
    }

    #[test]
    fn random_set_is_reproducible_and_refuses_integer_inputs() {
        let inputs = [spec("x", &[2, 3])];
        let a = CalibrationSet::random(&inputs, 3, 42).unwrap();
        let b = CalibrationSet::random(&inputs, 3, 42).unwrap();
        assert!(a.is_random());
        assert_eq!(a.get(2).unwrap(), b.get(2).unwrap());
        assert_ne!(a.get(0).unwrap(), a.get(1).unwrap());
        assert!(a.get(3).is_err());
        let ids = InputSpec {
            name: "ids".into(),
            dtype: DType::I64,
            shape: vec![4],
        };
        assert!(matches!(
            CalibrationSet::random(&[ids], 1, 0),
            Err(CalibError::RandomUnsupported { .. })
        ));
    }

    #[test]
    fn normal_generator_has_unit_variance() {
        let mut rng = SplitMix64::new(9);
        let v: Vec<f64> = (0..100_000).map(|_| rng.next_normal() as f64).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // for 1e5 samples the standard errors are ~0.003 (mean) and ~0.0045 (variance)
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
