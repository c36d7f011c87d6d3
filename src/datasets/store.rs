//! The bytes of data sets, through the `object_store` crate: a local directory (a path or
//! `file:///...`; in Kubernetes a `ReadWriteMany` volume mounted in the replicas and the
//! workers) or a bucket by URL (`s3://bucket/prefix`, `gs://...`, `az://...`), with
//! credentials from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as each SDK reads them;
//! in Kubernetes: IRSA / Workload Identity / a secret's env).
//!
//! Uploads go through a multipart upload that is aborted (its parts deleted) unless it
//! completes, so a refused or broken upload leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{local::LocalFileSystem, path::Path, ObjectStore, WriteMultipart};
use tokio::sync::OnceCell;

use super::DatasetError;

pub struct DatasetStore {
    url: String,
    store: OnceCell<(Arc<dyn ObjectStore>, Path)>,
}

impl DatasetStore {
    /// Nothing is touched until the first use (a local directory is created then).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            store: OnceCell::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn open(&self) -> Result<&(Arc<dyn ObjectStore>, Path), DatasetError> {
        self.store
            .get_or_try_init(|| async { open(&self.url).await })
            .await
    }

    fn path(base: &Path, location: &str) -> Path {
        let mut path = base.clone();
        for part in location.split('/').filter(|p| !p.is_empty()) {
            path = path.child(part);
        }
        path
    }

    /// Starts writing `location`; nothing is visible until [`Upload::finish`].
    pub async fn upload(&self, location: &str) -> Result<Upload, DatasetError> {
        let (store, base) = self.open().await?;
        let upload = store.put_multipart(&Self::path(base, location)).await?;
        Ok(Upload {
            writer: Some(WriteMultipart::new(upload)),
            bytes: 0,
        })
    }

    /// The object's bytes as a stream of chunks.
    pub async fn read(
        &self,
        location: &str,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>, DatasetError> {
        let (store, base) = self.open().await?;
        Ok(store.get(&Self::path(base, location)).await?.into_stream())
    }

    pub async fn read_all(&self, location: &str) -> Result<Bytes, DatasetError> {
        let (store, base) = self.open().await?;
        Ok(store
            .get(&Self::path(base, location))
            .await?
            .bytes()
            .await?)
    }

    pub async fn read_range(
        &self,
        location: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, DatasetError> {
        let (store, base) = self.open().await?;
        Ok(store.get_range(&Self::path(base, location), range).await?)
    }

    /// Deletes `location`; a missing object is not an error.
    pub async fn delete(&self, location: &str) -> Result<(), DatasetError> {
        let (store, base) = self.open().await?;
        match store.delete(&Self::path(base, location)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

async fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), DatasetError> {
    let local = |dir: std::path::PathBuf| async move {
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            DatasetError::Unavailable(format!(
                "cannot create the dataset directory `{}`: {e}",
                dir.display()
            ))
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir)?;
        Ok::<_, DatasetError>((Arc::new(store) as Arc<dyn ObjectStore>, Path::default()))
    };
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "file" => {
            let dir = parsed.to_file_path().map_err(|()| {
                DatasetError::Unavailable(format!("`{url}` is not a local directory"))
            })?;
            local(dir).await
        }
        // `C:`-style or bare paths parse as a one-letter scheme or not at all.
        Ok(parsed) if parsed.scheme().len() > 1 => {
            let options = std::env::vars().filter(|(key, _)| {
                let key = key.to_ascii_lowercase();
                ["aws_", "google_", "azure_"]
                    .iter()
                    .any(|p| key.starts_with(p))
            });
            let (store, base) = object_store::parse_url_opts(&parsed, options)?;
            Ok((Arc::from(store), base))
        }
        _ => local(std::path::PathBuf::from(url)).await,
    }
}

/// An upload in progress: aborted on drop unless finished.
pub struct Upload {
    writer: Option<WriteMultipart>,
    bytes: u64,
}

impl Upload {
    /// Adds `chunk` to the object (kept as it is: `put`, not a copy into the part buffer).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), DatasetError> {
        if let Some(writer) = self.writer.as_mut() {
            // Bound the parts in flight (5 MiB each).
            writer.wait_for_capacity(4).await?;
            self.bytes += chunk.len() as u64;
            writer.put(chunk);
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub async fn finish(mut self) -> Result<(), DatasetError> {
        if let Some(writer) = self.writer.take() {
            writer.finish().await?;
        }
        Ok(())
    }

    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(error) = writer.abort().await {
                tracing::warn!(%error, "cannot abort a dataset upload");
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(error) = writer.abort().await {
                        tracing::warn!(%error, "cannot abort a dataset upload");
                    }
                });
            }
        }
    }
}
