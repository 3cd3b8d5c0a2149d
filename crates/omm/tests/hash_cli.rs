//! End-to-end tests of `omm hash` on the conformance vectors.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn vectors() -> PathBuf {
    let dir = match std::env::var_os("OMM_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    };
    assert!(
        dir.join("pdq-expected.tsv").is_file(),
        "conformance vectors not found at {} (set OMM_VECTORS_DIR)",
        dir.display()
    );
    dir.join("threatexchange")
}

fn omm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omm"))
}

const SAMPLE: &str = "pdq/data/bridge-mods/aaa-orig.jpg";
const SAMPLE_HASH: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

#[test]
fn single_photo_prints_the_threatexchange_line() {
    let out = omm()
        .arg("hash")
        .arg(vectors().join(SAMPLE))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("pdq {SAMPLE_HASH} quality=100\n")
    );
}

#[test]
fn several_files_keep_order_and_failures_set_the_exit_code() {
    let v = vectors();
    let out = omm()
        .args(["hash", "-j", "2"])
        .arg(v.join(SAMPLE))
        .arg(v.join("pdq/data/misc-images/small.jpg")) // quality 0
        .arg("/nonexistent/file.png")
        .arg(v.join("pdq/data/misc-images/c.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].ends_with(&format!("aaa-orig.jpg\tpdq {SAMPLE_HASH} quality=100")));
    assert!(lines[1].ends_with(
        "c.png\tpdq e64cc9d91c623882f8d1f1d9a398e78c9f199b3bd83924f2b7e11e0bf861b064 quality=100"
    ));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("small.jpg: pdq: quality too low (0 < 50)"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/file.png"), "{stderr}");
}

#[test]
fn stdin_and_json_lines() {
    let bytes = std::fs::read(vectors().join("pdq/data/misc-images/wee.jpg")).unwrap();
    let mut child = omm()
        .args(["hash", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file"], "-");
    assert_eq!(v["signal_type"], "pdq");
    assert_eq!(
        v["hash"],
        "6227401f601ff4ccafcc9fad4b0d95d371a2eb7265a3285234d228ca94deeb2d"
    );
    assert_eq!(v["quality"], 100);
}

#[test]
fn json_reports_low_quality_as_an_error_with_the_hash() {
    let out = omm()
        .args(["hash", "--json"])
        .arg(vectors().join("pdq/data/reg-test-input/labelme-subset/q0003.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kind"], "quality_too_low");
    assert_eq!(v["quality"], 3);
    assert_eq!(
        v["hash"],
        "54a9f7c321d1443c43ba566e21d4a13989a3553f1472611cbbc5fda59e03b677"
    );
}

#[test]
fn video_and_url_content_types() {
    let dir = std::env::temp_dir().join(format!("omm-hash-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let url = dir.join("link.txt");
    std::fs::write(&url, b"https://www.facebook.com/?user=123\n").unwrap();
    let out = omm().arg("hash").arg(&empty).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "video_md5 d41d8cd98f00b204e9800998ecf8427e\n\
         video_sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    );
    let out = omm()
        .args(["hash", "-c", "url", "-S", "url_md5"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "url_md5 e359430911fe80c2dd526d3cca21da30\n"
    );
    // A signal type that does not apply to the content type is a usage error.
    let out = omm()
        .args(["hash", "-c", "photo", "-S", "video_md5"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = omm().args(["hash", "-S", "nope", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("omm-hash-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(vectors().join(SAMPLE)).unwrap();
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = omm().arg("hash").arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("jpeg data is truncated"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
