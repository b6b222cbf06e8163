//! The `redoubt-gateway` command line: the public flags exist, and a pod refuses to start
//! without an API key or a store. (Cargo builds the binary for these tests, which is also
//! what puts it next to the process-level tests in `tests/`.)

use std::process::Command;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redoubt-gateway"))
}

#[test]
fn help_lists_the_public_flags() {
    let out = gateway().arg("--help").output().expect("run redoubt-gateway --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--smpp-port",
        "--http-port",
        "--state",
        "--pod-id",
        "--api-key",
        "--embed",
        "--port",
        "--dir",
        "--node-id",
        "--cluster",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn a_pod_needs_an_api_key_and_a_store() {
    let out = gateway().args(["--smpp-port", "0", "--http-port", "0", "--state", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gateway().args(["--smpp-port", "0", "--http-port", "0", "--api-key", "k"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_config_file_supplies_flags_and_the_command_line_wins() {
    let dir = std::env::temp_dir().join(format!("gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.conf");
    // An unknown flag in the file is refused by name, like one on the command line.
    std::fs::write(&file, "# comment\napi-key k\nno-such-flag 1\n").unwrap();
    let out = gateway().args(["--config", file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-flag"));
    // The file supplies the flags; the command line's --pod-id wins over the file's. The pod
    // prints its start line, then waits for its (unreachable) store until killed.
    std::fs::write(&file, "api-key k\nsmpp-port 0\nhttp-port 0\nbind 127.0.0.1\nstate 127.0.0.1:1\npod-id from-file\n")
        .unwrap();
    let mut child = gateway()
        .args(["--config", file.to_str().unwrap(), "--pod-id", "from-cli"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("redoubt-gateway: pod from-cli smpp 127.0.0.1:"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
