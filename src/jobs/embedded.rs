//! In-process job queue for the single-node mode (`make run`): nothing survives a restart,
//! as nothing else in the embedded registry does.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;

use super::{Delivery, Job, JobQueue};
use crate::registry::RegistryError;

pub struct EmbeddedQueue {
    sender: mpsc::UnboundedSender<(Uuid, Job)>,
    receiver: Mutex<mpsc::UnboundedReceiver<(Uuid, Job)>>,
    depth: AtomicU64,
}

impl Default for EmbeddedQueue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(receiver),
            depth: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn submit(&self, model_id: Uuid, job: &Job) -> Result<(), RegistryError> {
        self.sender
            .send((model_id, job.clone()))
            .map_err(|_| RegistryError::Unavailable("the job queue is closed".to_owned()))?;
        self.depth.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn next(
        &self,
        _consumer: &str,
        wait: Duration,
    ) -> Result<Option<Delivery>, RegistryError> {
        let mut receiver = self.receiver.lock().await;
        Ok(tokio::time::timeout(wait, receiver.recv())
            .await
            .ok()
            .flatten()
            .map(|(model_id, job)| Delivery {
                model_id,
                job,
                receipt: model_id.to_string(),
            }))
    }

    async fn heartbeat(&self, _consumer: &str, _delivery: &Delivery) -> Result<(), RegistryError> {
        Ok(())
    }

    async fn ack(&self, _delivery: &Delivery) -> Result<(), RegistryError> {
        let _ = self
            .depth
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
        Ok(())
    }

    async fn depth(&self) -> Result<u64, RegistryError> {
        Ok(self.depth.load(Ordering::SeqCst))
    }
}
