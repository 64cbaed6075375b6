//! command-api's project and member commands, and the task commands that
//! only projects have (move), as one caller:
//! `ProjectCommands::new(&cmd.base, &token).create_project(&json!({"name": "Team"}))`.
//! Any 5xx answer fails the test (the command side never owes one).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clients::{id_of, Api, Call, CommandClient, Reply};

#[derive(Clone)]
pub struct ProjectCommands {
    api: Api,
    tasks: CommandClient,
}

impl ProjectCommands {
    pub fn new(base: &str, token: &str) -> Self {
        let tasks = CommandClient::new(base, token).refusing_server_errors();
        ProjectCommands {
            api: tasks.api().clone(),
            tasks,
        }
    }

    /// The same client as the holder of `token`.
    pub fn as_user(&self, token: &str) -> Self {
        ProjectCommands {
            api: self.api.as_user(token),
            tasks: self.tasks.as_user(token),
        }
    }

    /// The task commands, as the same caller.
    pub fn tasks(&self) -> &CommandClient {
        &self.tasks
    }

    pub fn request(&self, method: Method, path: &str) -> Call {
        self.api.request(method, path)
    }

    /// `POST /projects`.
    pub fn create_project(&self, body: &Value) -> Call {
        self.request(Method::POST, "/projects").json(body)
    }

    /// `PATCH /projects/{id}`.
    pub fn patch_project(&self, id: Uuid, body: &Value) -> Call {
        self.request(Method::PATCH, &format!("/projects/{id}"))
            .json(body)
    }

    /// `DELETE /projects/{id}`.
    pub fn delete_project(&self, id: Uuid) -> Call {
        self.request(Method::DELETE, &format!("/projects/{id}"))
    }

    /// `POST /projects/{id}/archive`.
    pub fn archive(&self, id: Uuid) -> Call {
        self.request(Method::POST, &format!("/projects/{id}/archive"))
    }

    /// `POST /projects/{id}/unarchive`.
    pub fn unarchive(&self, id: Uuid) -> Call {
        self.request(Method::POST, &format!("/projects/{id}/unarchive"))
    }

    /// `POST /projects/{id}/owner`.
    pub fn transfer(&self, id: Uuid, to: Uuid) -> Call {
        self.request(Method::POST, &format!("/projects/{id}/owner"))
            .json(&json!({ "user_id": to }))
    }

    /// `POST /projects/{id}/members` with any body.
    pub fn add_member_with(&self, id: Uuid, body: &Value) -> Call {
        self.request(Method::POST, &format!("/projects/{id}/members"))
            .json(body)
    }

    /// `POST /projects/{id}/members {user_id, role}`.
    pub fn add_member(&self, id: Uuid, user: Uuid, role: &str) -> Call {
        self.add_member_with(id, &json!({ "user_id": user, "role": role }))
    }

    /// `PATCH /projects/{id}/members/{user}`.
    pub fn change_role(&self, id: Uuid, user: Uuid, role: &str) -> Call {
        self.request(Method::PATCH, &format!("/projects/{id}/members/{user}"))
            .json(&json!({ "role": role }))
    }

    /// `DELETE /projects/{id}/members/{user}` (leaving, when `user` is the caller).
    pub fn remove_member(&self, id: Uuid, user: Uuid) -> Call {
        self.request(Method::DELETE, &format!("/projects/{id}/members/{user}"))
    }

    /// `POST /tasks/{id}/move {project_id}` (`None`: personal).
    pub fn move_task(&self, task: Uuid, to: Option<Uuid>) -> Call {
        self.request(Method::POST, &format!("/tasks/{task}/move"))
            .json(&json!({ "project_id": to }))
    }

    /// Creates a project named `name`; asserts 201 and returns its id.
    pub async fn created_project(&self, name: &str) -> Uuid {
        let r = self.create_project(&json!({ "name": name })).await;
        assert_eq!(r.status, StatusCode::CREATED, "create project: {r:?}");
        id_of(&r.body)
    }

    /// Adds `user` as `role`; asserts 201 and returns the reply.
    pub async fn added(&self, project: Uuid, user: Uuid, role: &str) -> Reply {
        let r = self.add_member(project, user, role).await;
        assert_eq!(r.status, StatusCode::CREATED, "add {user} as {role}: {r:?}");
        r
    }

    /// Creates a task in `project` with `body` (its `project_id` set);
    /// asserts 201 and returns the task's id.
    pub async fn created_task_in(&self, project: Uuid, body: Value) -> Uuid {
        let mut body = body;
        body["project_id"] = json!(project);
        let r = self.tasks().create_task(&body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create task in project: {r:?}"
        );
        id_of(&r.body)
    }
}
