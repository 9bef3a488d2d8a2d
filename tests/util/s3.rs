//! The S3 server of the tests (radosgw on a single-node Ceph cluster, see
//! scripts/s3-server.sh), started once per test binary, and an admin's S3
//! client for what coffer does not do: buckets, policies, Object Lock.

use super::Env;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::Client;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Access key and secret of one radosgw user.
#[derive(Clone)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
}

/// The running server.
pub struct S3Server {
    pub endpoint: String,
    pub admin: Creds,
    pub writer: Creds,
    /// The writer's user id, for bucket policies.
    pub writer_user: String,
    pub dir: PathBuf,
}

/// The server of this test binary, started on first use. A watchdog in
/// scripts/s3-server.sh stops its daemons (by PID) when this process ends.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> S3Server {
    // A loaded machine can make a daemon miss its start-up window: try
    // again in a fresh directory before giving up.
    let mut errors = String::new();
    for attempt in 1..=3 {
        let dir = std::env::temp_dir().join(format!("coffer-s3-{}-{attempt}", std::process::id()));
        match start_in("s3-server.sh", &dir) {
            Ok(()) => {
                if !errors.is_empty() {
                    eprintln!("S3 test server up on attempt {attempt}; earlier:\n{errors}");
                }
                return read_env(dir);
            }
            Err(e) => errors.push_str(&format!("attempt {attempt}: {e}\n")),
        }
    }
    panic!(
        "scripts/s3-server.sh start failed (needs ceph-mon, ceph-osd, radosgw: \
         scripts/install-deps.sh):\n{errors}"
    );
}

/// The cold-storage S3 server of this test binary (moto, see
/// scripts/cold-server.sh), started on first use and stopped by PID when
/// this process ends. moto takes any credentials: admin and writer are one.
#[allow(dead_code)] // only the cold-storage tests use it
pub fn cold_server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("coffer-cold-{}", std::process::id()));
        start_in("cold-server.sh", &dir).unwrap_or_else(|e| {
            panic!(
                "scripts/cold-server.sh start failed (needs moto: COFFER_DEPS=tests \
                 scripts/install-deps.sh): {e}"
            )
        });
        let endpoint = env_file(&dir)("S3_ENDPOINT");
        let creds = Creds {
            access_key: "coffer-test".into(),
            secret_key: "coffer-test-secret".into(),
        };
        S3Server {
            endpoint,
            admin: creds.clone(),
            writer: creds,
            writer_user: "writer".into(),
            dir,
        }
    })
}

/// Runs `scripts/SCRIPT start DIR --owner-pid <this process>`; its
/// stderr if it fails (DIR removed then).
fn start_in(script: &str, dir: &std::path::Path) -> Result<(), String> {
    let script = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let _ = std::fs::remove_dir_all(dir);
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The env file a server script wrote into `dir`, as a lookup of its
/// variables.
fn env_file(dir: &std::path::Path) -> impl Fn(&str) -> String {
    let text = std::fs::read_to_string(dir.join("env")).expect("read the server's env file");
    move |name| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from the server's env file"))
            .to_string()
    }
}

fn read_env(dir: PathBuf) -> S3Server {
    let var = env_file(&dir);
    S3Server {
        endpoint: var("S3_ENDPOINT"),
        admin: Creds {
            access_key: var("ADMIN_ACCESS_KEY"),
            secret_key: var("ADMIN_SECRET_KEY"),
        },
        writer: Creds {
            access_key: var("WRITER_ACCESS_KEY"),
            secret_key: var("WRITER_SECRET_KEY"),
        },
        writer_user: var("WRITER_USER"),
        dir,
    }
}

/// Points `env`'s commands at `endpoint` with two AWS profiles, `admin`
/// (the default, `AWS_PROFILE`) and `putonly`, in a credentials file; no
/// credentials in the environment, so each command uses the profile it
/// names.
pub fn with_profiles(env: &mut Env, s3: &S3Server, endpoint: &str) {
    let creds = env.path("aws-credentials");
    let profile = |name: &str, c: &Creds| {
        format!(
            "[{name}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            c.access_key, c.secret_key
        )
    };
    let text = profile("admin", &s3.admin) + &profile("putonly", &s3.writer);
    std::fs::write(&creds, text).unwrap();
    std::fs::write(env.path("aws-config"), "").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    env.vars = [
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", path(&creds)),
        ("AWS_CONFIG_FILE", path(&env.path("aws-config"))),
        ("AWS_PROFILE", "admin".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("COFFER_S3_RETRY_SECONDS", "30".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
}

/// A process environment that points coffer at `endpoint` as `creds`.
pub fn aws_vars(endpoint: &str, creds: &Creds) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", &creds.access_key),
        ("AWS_SECRET_ACCESS_KEY", &creds.secret_key),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("COFFER_S3_RETRY_SECONDS", "30"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An S3 client of the test itself, as `creds`, at `endpoint`.
pub fn client(endpoint: &str, creds: &Creds) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::from_static("us-east-1"))
        .credentials_provider(Credentials::new(
            &creds.access_key,
            &creds.secret_key,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// A runtime for the test's own S3 calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

impl S3Server {
    pub fn admin_client(&self) -> Client {
        client(&self.endpoint, &self.admin)
    }

    pub fn writer_client(&self) -> Client {
        client(&self.endpoint, &self.writer)
    }

    /// Puts the README's bucket policy on `bucket`: the writer user may
    /// only PutObject under files/, data/, index/ and snapshots/.
    pub fn allow_writer_put_only(&self, bucket: &str) {
        self.set_policy(bucket, &write_only_policy(bucket, &self.writer_user));
    }

    /// Puts `policy` on `bucket`, as the admin.
    pub fn set_policy(&self, bucket: &str, policy: &str) {
        rt().block_on(
            self.admin_client()
                .put_bucket_policy()
                .bucket(bucket)
                .policy(policy)
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "policy on {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    }

    /// A new radosgw user `uid` (as `radosgw-admin user create` makes
    /// one: it owns nothing, may do nothing a policy does not grant).
    pub fn add_user(&self, uid: &str) -> Creds {
        let creds = Creds {
            access_key: format!("{}{}", uid.replace('-', "").to_uppercase(), "KEY0123456789")
                .chars()
                .take(20)
                .collect(),
            secret_key: format!("{uid}-secret-0123456789abcdefghijklmnopqrstuvwxyz")
                .chars()
                .take(40)
                .collect(),
        };
        self.rgw_admin(&[
            "user",
            "create",
            "--uid",
            uid,
            "--display-name",
            uid,
            "--access-key",
            &creds.access_key,
            "--secret-key",
            &creds.secret_key,
        ]);
        creds
    }

    /// Sets and enables `bucket`'s quota: at most `max_bytes` stored.
    pub fn set_bucket_quota(&self, bucket: &str, max_bytes: u64) {
        let max = max_bytes.to_string();
        let b = format!("--bucket={bucket}");
        self.rgw_admin(&[
            "quota",
            "set",
            "--quota-scope=bucket",
            &b,
            "--max-size",
            &max,
        ]);
        self.rgw_admin(&["quota", "enable", "--quota-scope=bucket", &b]);
    }

    /// Runs `radosgw-admin ARGS` against this server's cluster.
    fn rgw_admin(&self, args: &[&str]) {
        let out = Command::new("radosgw-admin")
            .arg("-c")
            .arg(self.dir.join("ceph.conf"))
            .args(["-n", "client.rgw", "--admin-socket="])
            .args(args)
            .output()
            .expect("run radosgw-admin");
        assert!(
            out.status.success(),
            "radosgw-admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates `bucket` as the admin, with Object Lock enabled if `lock`.
    pub fn create_bucket(&self, bucket: &str, lock: bool) {
        let c = self.admin_client();
        rt().block_on(
            c.create_bucket()
                .bucket(bucket)
                .object_lock_enabled_for_bucket(lock)
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    }
}

impl Env {
    /// Keys and a repository at `repo` (`s3://BUCKET/PREFIX`, the bucket
    /// must exist) made by `init` with `init_args` too; every command,
    /// `backup` included, runs with the admin's credentials against
    /// `endpoint` (the server's, or a proxy's in front of it).
    pub fn on_s3_as_admin(
        server: &S3Server,
        endpoint: &str,
        repo: &str,
        init_args: &[&str],
    ) -> Self {
        let mut env = Self::bare();
        env.repo = repo.into();
        env.vars = aws_vars(endpoint, &server.admin);
        env.writer_vars = env.vars.clone();
        env.generate_keys();
        let mut args = vec![
            "init",
            "--repo",
            repo,
            "--recipient",
            "admin.cert",
            "--writer-key-out",
            "writer.key",
        ];
        args.extend_from_slice(init_args);
        env.ok(&args);
        env
    }

    /// Keys and a repository at `s3://BUCKET/PREFIX` on `server` (the bucket
    /// must exist); commands run with the admin's credentials, `backup`
    /// with the writer's.
    pub fn on_s3(server: &S3Server, bucket: &str, prefix: &str) -> Self {
        let mut env = Self::bare();
        env.repo = format!("s3://{bucket}/{prefix}");
        env.vars = aws_vars(&server.endpoint, &server.admin);
        env.writer_vars = aws_vars(&server.endpoint, &server.writer);
        env.init()
    }
}

/// The bucket policy of the README: the writer may PutObject under files/,
/// data/, index/ and snapshots/, nothing else.
pub fn write_only_policy(bucket: &str, writer: &str) -> String {
    put_only_policy(
        bucket,
        writer,
        &["files/*", "data/*", "index/*", "snapshots/*"],
    )
}

/// The README's tenant policy: on the tenant's own bucket, user `writer`
/// may only PutObject (as [`write_only_policy`]) and user `reader` may
/// only read and list (restore, mount, check, status); neither deletes.
pub fn tenant_policy(bucket: &str, writer: &str, reader: &str) -> String {
    let writer_only = write_only_policy(bucket, writer);
    let statements = writer_only
        .split_once("\"Statement\": [")
        .and_then(|(_, rest)| rest.rsplit_once(']'))
        .map(|(inner, _)| inner.trim().to_string())
        .expect("the writer's statements");
    format!(
        r#"{{
  "Version": "2012-10-17",
  "Statement": [
    {statements},
    {{
      "Sid": "TenantReaderMayReadAndList",
      "Effect": "Allow",
      "Principal": {{"AWS": ["arn:aws:iam:::user/{reader}"]}},
      "Action": ["s3:GetObject", "s3:ListBucket"],
      "Resource": ["arn:aws:s3:::{bucket}", "arn:aws:s3:::{bucket}/*"]
    }}
  ]
}}"#
    )
}

/// A policy letting user `writer` PutObject on `bucket`'s keys matching
/// `keys` (patterns such as `data/*`), and nothing else: no read, list,
/// delete or retention change. A PUT must hand the object to the bucket's
/// owner (`x-amz-acl: bucket-owner-full-control`, which coffer sends):
/// else, on stores without object ownership enforcement (radosgw), the
/// writer would own it and the admin could not read what it planted.
pub fn put_only_policy(bucket: &str, writer: &str, keys: &[&str]) -> String {
    let resources: Vec<String> = keys
        .iter()
        .map(|k| format!("\"arn:aws:s3:::{bucket}/{k}\""))
        .collect();
    let resources = resources.join(", ");
    format!(
        r#"{{
  "Version": "2012-10-17",
  "Statement": [
    {{
      "Sid": "CofferWriterMayOnlyPut",
      "Effect": "Allow",
      "Principal": {{"AWS": ["arn:aws:iam:::user/{writer}"]}},
      "Action": ["s3:PutObject"],
      "Resource": [{resources}],
      "Condition": {{"StringEquals": {{"s3:x-amz-acl": "bucket-owner-full-control"}}}}
    }},
    {{
      "Sid": "CofferWriterMayNotReadListOrDelete",
      "Effect": "Deny",
      "Principal": {{"AWS": ["arn:aws:iam:::user/{writer}"]}},
      "Action": [
        "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions",
        "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObjectAcl", "s3:PutObjectAcl",
        "s3:PutObjectRetention", "s3:BypassGovernanceRetention"
      ],
      "Resource": ["arn:aws:s3:::{bucket}", "arn:aws:s3:::{bucket}/*"]
    }}
  ]
}}"#
    )
}
