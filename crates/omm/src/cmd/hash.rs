//! `omm hash`: hash files (or stdin) in parallel and print one line per signal.
//!
//! Output mimics `threatexchange hash`: `<signal_type> <hash>`, plus ` quality=<q>` for PDQ.
//! With several inputs each line starts with the file name and a tab. `--json` prints one JSON
//! object per line instead. Failures go to stderr (or into the JSON line) and make the exit
//! code 1, but every other file is still hashed.

use std::io::{IsTerminal, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context;
use omm_signals::decode::ImageFormat;
use omm_signals::pdq::{self, PdqOptions, PreResize};
use omm_signals::signal::video_digests;
use omm_signals::{decode, ContentType, DecodeOptions, HashError, HashOptions, SignalType};
use rayon::prelude::*;
use serde_json::json;

/// Show a progress bar from this many inputs on (when stderr is a terminal).
const PROGRESS_MIN_FILES: usize = 16;

/// Arguments of `omm hash`.
#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Files to hash; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Only compute this signal type (repeatable): pdq, video_md5, video_sha256, url, url_md5.
    #[arg(short = 'S', long = "signal-type", value_name = "TYPE", value_parser = parse_signal_type)]
    pub signal_types: Vec<SignalType>,

    /// Content type of every input (photo, video, url, text); inferred from the file extension
    /// (or the leading bytes) when absent.
    #[arg(short = 'c', long = "content-type", value_name = "TYPE", value_parser = parse_content_type)]
    pub content_type: Option<ContentType>,

    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,

    /// Rotate/flip photos by their EXIF orientation tag before hashing (off by default, like
    /// every other PDQ implementation).
    #[arg(long)]
    pub exif_orientation: bool,

    /// Refuse images with more pixels than this.
    #[arg(long, value_name = "N", default_value_t = omm_signals::decode::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,

    /// Resize photos larger than 512 pixels to 512×512 (nearest neighbour) first, like the
    /// C++ `pdq-photo-hasher` tool. Default: full resolution, like Open Media Match.
    #[arg(long)]
    pub pdq_resize_512: bool,

    /// Worker threads (default: all cores).
    #[arg(short = 'j', long, value_name = "N")]
    pub threads: Option<usize>,
}

fn parse_signal_type(s: &str) -> Result<SignalType, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = SignalType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown signal type {s:?} (known: {})", names.join(", "))
    })
}

fn parse_content_type(s: &str) -> Result<ContentType, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = ContentType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown content type {s:?} (known: {})", names.join(", "))
    })
}

/// Where an input's bytes come from.
enum Source {
    File(PathBuf),
    Stdin(Vec<u8>),
}

/// One output line of one input.
enum Outcome {
    Hash {
        signal_type: SignalType,
        value: String,
        quality: Option<u8>,
    },
    Error {
        signal_type: Option<SignalType>,
        kind: &'static str,
        message: String,
        hash: Option<String>,
        quality: Option<u8>,
    },
}

struct FileReport {
    label: String,
    content_type: Option<ContentType>,
    outcomes: Vec<Outcome>,
}

impl FileReport {
    fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Error { .. }))
    }
}

fn input_error(kind: &'static str, message: String) -> Outcome {
    Outcome::Error {
        signal_type: None,
        kind,
        message,
        hash: None,
        quality: None,
    }
}

/// Runs `omm hash`.
pub fn run(args: HashArgs) -> anyhow::Result<ExitCode> {
    if let Some(ct) = args.content_type {
        for st in &args.signal_types {
            if !st.content_types().contains(&ct) {
                anyhow::bail!("signal type {st} does not apply to {ct} content");
            }
        }
    }
    let stdin_count = args.files.iter().filter(|f| f.as_os_str() == "-").count();
    if stdin_count > 1 {
        anyhow::bail!("`-` (standard input) can be given only once");
    }
    let sources: Vec<(String, Source)> = args
        .files
        .iter()
        .map(|f| -> anyhow::Result<(String, Source)> {
            if f.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut buf)
                    .context("reading standard input")?;
                Ok(("-".to_string(), Source::Stdin(buf)))
            } else {
                Ok((f.display().to_string(), Source::File(f.clone())))
            }
        })
        .collect::<anyhow::Result<_>>()?;

    let opts = HashOptions {
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            apply_exif_orientation: args.exif_orientation,
        },
        pdq: PdqOptions {
            pre_resize: if args.pdq_resize_512 {
                PreResize::Nearest512
            } else {
                PreResize::None
            },
        },
    };
    let ctx = Ctx {
        content_type: args.content_type,
        signal_types: args.signal_types.clone(),
        opts,
    };

    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = args.threads {
            b = b.num_threads(n.max(1));
        }
        b.build().context("starting worker threads")?
    };

    let progress =
        (sources.len() >= PROGRESS_MIN_FILES && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(sources.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files, {per_sec}, eta {eta}",
            ) {
                pb.set_style(style);
            }
            pb
        });

    let prefix = sources.len() > 1;
    let (tx, rx) = mpsc::channel::<(usize, FileReport)>();
    let mut any_failed = false;
    let mut write_error: Option<std::io::Error> = None;
    std::thread::scope(|scope| {
        let ctx = &ctx;
        let sources = &sources;
        scope.spawn(move || {
            pool.install(|| {
                sources
                    .par_iter()
                    .enumerate()
                    .for_each_with(tx, |tx, (i, (label, source))| {
                        let report = catch_unwind(AssertUnwindSafe(|| ctx.hash_one(label, source)))
                            .unwrap_or_else(|_| FileReport {
                                label: label.clone(),
                                content_type: None,
                                outcomes: vec![input_error(
                                    "internal",
                                    "internal error while hashing".into(),
                                )],
                            });
                        // The receiver lives until every sender is gone.
                        let _ = tx.send((i, report));
                    });
            });
        });

        // Print in input order as results arrive.
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0usize;
        let stdout = std::io::stdout();
        for (i, report) in rx {
            pending.insert(i, report);
            while let Some(report) = pending.remove(&next) {
                any_failed |= report.failed();
                let print = || print_report(&mut stdout.lock(), &report, prefix, args.json);
                let r = match &progress {
                    Some(pb) => {
                        pb.inc(1);
                        pb.suspend(print)
                    }
                    None => print(),
                };
                if let Err(e) = r {
                    write_error.get_or_insert(e);
                }
                next += 1;
            }
        }
    });
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if let Some(e) = write_error {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing output");
        }
    }
    Ok(if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

struct Ctx {
    content_type: Option<ContentType>,
    signal_types: Vec<SignalType>,
    opts: HashOptions,
}

impl Ctx {
    fn wanted(&self, ct: ContentType) -> Vec<SignalType> {
        ct.signal_types()
            .filter(|t| self.signal_types.is_empty() || self.signal_types.contains(t))
            .collect()
    }

    fn hash_one(&self, label: &str, source: &Source) -> FileReport {
        let mut report = FileReport {
            label: label.to_string(),
            content_type: None,
            outcomes: Vec::new(),
        };
        let ct = match self.content_type_of(source) {
            Ok(ct) => ct,
            Err(e) => {
                report.outcomes.push(e);
                return report;
            }
        };
        report.content_type = Some(ct);
        let wanted = self.wanted(ct);
        if wanted.is_empty() {
            if !self.signal_types.is_empty() {
                let names: Vec<&str> = self.signal_types.iter().map(|t| t.name()).collect();
                report.outcomes.push(input_error(
                    "not_applicable",
                    format!(
                        "{ct} content has none of the requested signal types ({})",
                        names.join(", ")
                    ),
                ));
            }
            // `text` has no hasher: nothing to print, like `threatexchange hash`.
            return report;
        }
        match ct {
            ContentType::Video => self.hash_video(source, &wanted, &mut report.outcomes),
            ContentType::Photo => self.hash_photo(source, &mut report.outcomes),
            ContentType::Url | ContentType::Text => match read_all(source) {
                Ok(bytes) => {
                    for st in wanted {
                        report
                            .outcomes
                            .push(outcome(st, st.hash_bytes(ct, &bytes, &self.opts)));
                    }
                }
                Err(e) => report.outcomes.push(input_error("io", e)),
            },
        }
        report
    }

    fn content_type_of(&self, source: &Source) -> Result<ContentType, Outcome> {
        if let Some(ct) = self.content_type {
            return Ok(ct);
        }
        if let Source::File(p) = source {
            if let Some(ct) = p
                .extension()
                .and_then(|e| e.to_str())
                .and_then(ContentType::from_extension)
            {
                return Ok(ct);
            }
        }
        // Unknown extension or stdin: recognise images by their leading bytes.
        let head = match source {
            Source::Stdin(b) => b[..b.len().min(16)].to_vec(),
            Source::File(p) => read_head(p).map_err(|e| input_error("io", e))?,
        };
        if ImageFormat::sniff(&head).is_some() {
            Ok(ContentType::Photo)
        } else {
            Err(input_error(
                "unknown_content_type",
                "cannot infer the content type; pass --content-type".to_string(),
            ))
        }
    }

    fn hash_photo(&self, source: &Source, out: &mut Vec<Outcome>) {
        let bytes = match read_all(source) {
            Ok(b) => b,
            Err(e) => return out.push(input_error("io", e)),
        };
        let st = SignalType::Pdq;
        let img = match decode(&bytes, &self.opts.decode) {
            Ok(img) => img,
            Err(e) => return out.push(outcome(st, Err(HashError::Decode(e)))),
        };
        let r = pdq::hash_image(&img, self.opts.pdq);
        if r.is_low_quality() {
            out.push(outcome(
                st,
                Err(HashError::QualityTooLow {
                    hash: r.hash,
                    quality: r.quality,
                }),
            ));
        } else {
            out.push(Outcome::Hash {
                signal_type: st,
                value: r.hash.to_hex(),
                quality: Some(r.quality),
            });
        }
    }

    fn hash_video(&self, source: &Source, wanted: &[SignalType], out: &mut Vec<Outcome>) {
        let digests = match source {
            Source::Stdin(b) => video_digests(&b[..]).map_err(|e| e.to_string()),
            Source::File(p) => std::fs::File::open(p)
                .and_then(video_digests)
                .map_err(|e| e.to_string()),
        };
        match digests {
            Ok((md5, sha256)) => {
                for &st in wanted {
                    let value = match st {
                        SignalType::VideoMd5 => md5.clone(),
                        _ => sha256.clone(),
                    };
                    out.push(Outcome::Hash {
                        signal_type: st,
                        value,
                        quality: None,
                    });
                }
            }
            Err(e) => out.push(input_error("io", e)),
        }
    }
}

fn outcome(st: SignalType, r: Result<omm_signals::Signal, HashError>) -> Outcome {
    match r {
        Ok(s) => Outcome::Hash {
            signal_type: st,
            value: s.value,
            quality: s.quality,
        },
        Err(e) => {
            let (kind, hash, quality) = match &e {
                HashError::QualityTooLow { hash, quality } => {
                    ("quality_too_low", Some(hash.to_hex()), Some(*quality))
                }
                HashError::Decode(_) => ("decode", None, None),
                _ => ("invalid_input", None, None),
            };
            Outcome::Error {
                signal_type: Some(st),
                kind,
                message: e.to_string(),
                hash,
                quality,
            }
        }
    }
}

fn read_all(source: &Source) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match source {
        Source::Stdin(b) => Ok(std::borrow::Cow::Borrowed(b)),
        Source::File(p) => std::fs::read(p)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| e.to_string()),
    }
}

fn read_head(p: &Path) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    head.truncate(n);
    Ok(head)
}

fn print_report(
    out: &mut impl Write,
    report: &FileReport,
    prefix: bool,
    json: bool,
) -> std::io::Result<()> {
    for o in &report.outcomes {
        if json {
            let mut v = json!({
                "file": report.label,
                "content_type": report.content_type.map(|c| c.name()),
            });
            match o {
                Outcome::Hash {
                    signal_type,
                    value,
                    quality,
                } => {
                    v["signal_type"] = json!(signal_type.name());
                    v["hash"] = json!(value);
                    if let Some(q) = quality {
                        v["quality"] = json!(q);
                    }
                }
                Outcome::Error {
                    signal_type,
                    kind,
                    message,
                    hash,
                    quality,
                } => {
                    v["signal_type"] = json!(signal_type.map(|s| s.name()));
                    v["error"] = json!(message);
                    v["error_kind"] = json!(kind);
                    if let Some(h) = hash {
                        v["hash"] = json!(h);
                    }
                    if let Some(q) = quality {
                        v["quality"] = json!(q);
                    }
                }
            }
            writeln!(out, "{v}")?;
            continue;
        }
        match o {
            Outcome::Hash {
                signal_type,
                value,
                quality,
            } => {
                if prefix {
                    write!(out, "{}\t", report.label)?;
                }
                write!(out, "{signal_type} {value}")?;
                if let Some(q) = quality {
                    write!(out, " quality={q}")?;
                }
                writeln!(out)?;
            }
            Outcome::Error {
                signal_type,
                message,
                ..
            } => {
                let st = signal_type.map(|s| format!("{s}: ")).unwrap_or_default();
                eprintln!("omm: {}: {st}{message}", report.label);
            }
        }
    }
    Ok(())
}
