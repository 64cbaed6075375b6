//! The `Project` aggregate: pure business rules, no async, no I/O, no clock,
//! like the task one (`decide` says which events a command produces or why
//! it is refused; `evolve` folds an event into the state).
//!
//! Roles, from most to least powerful: `owner` (everything, and alone may
//! delete the project and transfer it), `admin` (edit, archive, manage
//! members and viewers), `member`, `viewer`. A caller who is not a member
//! gets `NotFound` for every command, exactly as for a project that does
//! not exist or was deleted; a member lacking the right gets `Forbidden`.
//! Ownership moves only by transfer (`project.owner_changed`); the old
//! owner stays as an admin; the owner cannot leave.

use std::collections::BTreeMap;

use events::{
    ProjectArchived, ProjectCreated, ProjectDeleted, ProjectEvent, ProjectMemberAdded,
    ProjectMemberRemoved, ProjectMemberRoleChanged, ProjectOwnerChanged, ProjectRole,
    ProjectUnarchived, ProjectUpdated,
};
use uuid::Uuid;

use crate::domain::{Description, Invalid};

pub const NAME_MAX_CHARS: usize = 100;

/// A project name: trimmed, 1 to 100 characters, one line, something visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let t = raw.trim();
        service::text::check_line(t).map_err(Invalid)?;
        if service::text::visible_chars(t) == 0 {
            return Err(Invalid(
                "must not be empty or only whitespace and invisible characters".into(),
            ));
        }
        let n = t.chars().count();
        if n > NAME_MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {NAME_MAX_CHARS} characters, got {n}"
            )));
        }
        Ok(ProjectName(t.to_owned()))
    }
}

/// A role a member may be given: any but `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantableRole(ProjectRole);

impl GrantableRole {
    pub fn parse(role: ProjectRole) -> Result<Self, Invalid> {
        if role == ProjectRole::Owner {
            return Err(Invalid(
                "`owner` cannot be given: transfer ownership with POST /projects/{id}/owner".into(),
            ));
        }
        Ok(GrantableRole(role))
    }
}

/// A live project as the command side knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub owner_id: Uuid,
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub members: BTreeMap<Uuid, ProjectRole>,
}

impl Project {
    pub fn role_of(&self, user: Uuid) -> Option<ProjectRole> {
        self.members.get(&user).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ProjectState {
    #[default]
    Absent,
    Live(Project),
    Deleted,
}

impl ProjectState {
    pub fn live(&self) -> Option<&Project> {
        match self {
            ProjectState::Live(p) => Some(p),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProjectAction {
    Create {
        name: ProjectName,
        description: Description,
    },
    /// `None` leaves a field as it is.
    Update {
        name: Option<ProjectName>,
        description: Option<Description>,
    },
    Archive,
    Unarchive,
    Delete,
    AddMember {
        user_id: Uuid,
        role: GrantableRole,
    },
    ChangeRole {
        user_id: Uuid,
        role: GrantableRole,
    },
    /// By an admin, or oneself (leaving).
    RemoveMember {
        user_id: Uuid,
    },
    TransferOwnership {
        to: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectCommand {
    pub actor: Uuid,
    pub action: ProjectAction,
    /// Members one project may have.
    pub max_members: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// No such project for this caller: never existed, deleted, or the
    /// caller is not a member.
    #[error("no such project")]
    NotFound,
    #[error("the project already exists")]
    AlreadyExists,
    /// A member whose role does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The user named in the path is not a member.
    #[error("no such member")]
    NoSuchMember,
    #[error("the user is already a member of the project")]
    AlreadyMember,
    #[error("the owner cannot leave the project; transfer ownership first")]
    OwnerCannotLeave,
    /// The owner's role changes only by a transfer.
    #[error("the owner's role changes only by transferring ownership")]
    OwnerRole,
    /// A transfer to someone who is not a member (422 on `/user_id`).
    #[error("not a member of the project")]
    TransferToNonMember,
    #[error("the project already has {cap} members")]
    MemberLimit { cap: u32 },
}

/// The rights of `role` over members holding `target`.
fn may_manage(actor: ProjectRole, target: ProjectRole) -> bool {
    match actor {
        ProjectRole::Owner => true,
        ProjectRole::Admin => matches!(target, ProjectRole::Member | ProjectRole::Viewer),
        _ => false,
    }
}

fn manages_members(role: ProjectRole) -> Result<(), ProjectError> {
    match role {
        ProjectRole::Owner | ProjectRole::Admin => Ok(()),
        _ => Err(ProjectError::Forbidden(
            "only the owner and admins manage the project's members",
        )),
    }
}

const ADMINS_BY_OWNER: &str = "only the owner may make, change or remove admins";

/// The events `command` produces on `state`; an empty list changes nothing.
pub fn decide(
    state: &ProjectState,
    command: ProjectCommand,
) -> Result<Vec<ProjectEvent>, ProjectError> {
    let ProjectCommand {
        actor,
        action,
        max_members,
    } = command;
    let project = match (state, &action) {
        (ProjectState::Absent, ProjectAction::Create { name, description }) => {
            return Ok(vec![ProjectEvent::Created(ProjectCreated {
                owner_id: actor,
                name: name.0.clone(),
                description: description.as_str().to_owned(),
            })]);
        }
        (_, ProjectAction::Create { .. }) => return Err(ProjectError::AlreadyExists),
        (ProjectState::Live(p), _) => p,
        _ => return Err(ProjectError::NotFound),
    };
    let role = project.role_of(actor).ok_or(ProjectError::NotFound)?;
    let editor = matches!(role, ProjectRole::Owner | ProjectRole::Admin);
    match action {
        ProjectAction::Create { .. } => Err(ProjectError::AlreadyExists),
        ProjectAction::Update { name, description } => {
            if !editor {
                return Err(ProjectError::Forbidden(
                    "only the owner and admins edit the project",
                ));
            }
            let updated = ProjectUpdated {
                name: name.map(|n| n.0).filter(|n| *n != project.name),
                description: description
                    .map(|d| d.as_str().to_owned())
                    .filter(|d| *d != project.description),
            };
            Ok(if updated == ProjectUpdated::default() {
                vec![]
            } else {
                vec![ProjectEvent::Updated(updated)]
            })
        }
        ProjectAction::Archive | ProjectAction::Unarchive => {
            if !editor {
                return Err(ProjectError::Forbidden(
                    "only the owner and admins archive or unarchive the project",
                ));
            }
            let archive = action == ProjectAction::Archive;
            Ok(match (archive, project.archived) {
                (true, false) => vec![ProjectEvent::Archived(ProjectArchived {})],
                (false, true) => vec![ProjectEvent::Unarchived(ProjectUnarchived {})],
                _ => vec![],
            })
        }
        ProjectAction::Delete => {
            if role != ProjectRole::Owner {
                return Err(ProjectError::Forbidden(
                    "only the owner deletes the project",
                ));
            }
            Ok(vec![ProjectEvent::Deleted(ProjectDeleted {})])
        }
        ProjectAction::AddMember { user_id, role: new } => {
            manages_members(role)?;
            if !may_manage(role, new.0) {
                return Err(ProjectError::Forbidden(ADMINS_BY_OWNER));
            }
            if project.members.contains_key(&user_id) {
                return Err(ProjectError::AlreadyMember);
            }
            if project.members.len() >= max_members as usize {
                return Err(ProjectError::MemberLimit { cap: max_members });
            }
            Ok(vec![ProjectEvent::MemberAdded(ProjectMemberAdded {
                user_id,
                role: new.0,
            })])
        }
        ProjectAction::ChangeRole { user_id, role: new } => {
            manages_members(role)?;
            let current = project.role_of(user_id).ok_or(ProjectError::NoSuchMember)?;
            if !may_manage(role, current) || !may_manage(role, new.0) {
                return Err(ProjectError::Forbidden(ADMINS_BY_OWNER));
            }
            if current == ProjectRole::Owner {
                return Err(ProjectError::OwnerRole);
            }
            Ok(if current == new.0 {
                vec![]
            } else {
                vec![ProjectEvent::MemberRoleChanged(ProjectMemberRoleChanged {
                    user_id,
                    from: current,
                    to: new.0,
                })]
            })
        }
        ProjectAction::RemoveMember { user_id } if user_id == actor => {
            if role == ProjectRole::Owner {
                return Err(ProjectError::OwnerCannotLeave);
            }
            Ok(vec![ProjectEvent::MemberRemoved(ProjectMemberRemoved {
                user_id,
            })])
        }
        ProjectAction::RemoveMember { user_id } => {
            manages_members(role)?;
            let current = project.role_of(user_id).ok_or(ProjectError::NoSuchMember)?;
            if !may_manage(role, current) || current == ProjectRole::Owner {
                return Err(ProjectError::Forbidden(ADMINS_BY_OWNER));
            }
            Ok(vec![ProjectEvent::MemberRemoved(ProjectMemberRemoved {
                user_id,
            })])
        }
        ProjectAction::TransferOwnership { to } => {
            if role != ProjectRole::Owner {
                return Err(ProjectError::Forbidden(
                    "only the owner transfers the project",
                ));
            }
            if !project.members.contains_key(&to) {
                return Err(ProjectError::TransferToNonMember);
            }
            Ok(if to == actor {
                vec![]
            } else {
                vec![ProjectEvent::OwnerChanged(ProjectOwnerChanged {
                    from: actor,
                    to,
                })]
            })
        }
    }
}

/// Folds one event into the state; an event that does not fit the state
/// (which `decide` never produces) leaves it unchanged.
pub fn evolve(state: ProjectState, event: &ProjectEvent) -> ProjectState {
    match (state, event) {
        (ProjectState::Absent, ProjectEvent::Created(c)) => ProjectState::Live(Project {
            owner_id: c.owner_id,
            name: c.name.clone(),
            description: c.description.clone(),
            archived: false,
            members: BTreeMap::from([(c.owner_id, ProjectRole::Owner)]),
        }),
        (ProjectState::Live(mut p), ProjectEvent::Updated(u)) => {
            if let Some(name) = &u.name {
                p.name = name.clone();
            }
            if let Some(description) = &u.description {
                p.description = description.clone();
            }
            ProjectState::Live(p)
        }
        (ProjectState::Live(mut p), ProjectEvent::Archived(_)) => {
            p.archived = true;
            ProjectState::Live(p)
        }
        (ProjectState::Live(mut p), ProjectEvent::Unarchived(_)) => {
            p.archived = false;
            ProjectState::Live(p)
        }
        (ProjectState::Live(_), ProjectEvent::Deleted(_)) => ProjectState::Deleted,
        (ProjectState::Live(mut p), ProjectEvent::MemberAdded(m)) => {
            p.members.insert(m.user_id, m.role);
            ProjectState::Live(p)
        }
        (ProjectState::Live(mut p), ProjectEvent::MemberRoleChanged(m)) => {
            p.members.insert(m.user_id, m.to);
            ProjectState::Live(p)
        }
        (ProjectState::Live(mut p), ProjectEvent::MemberRemoved(m)) => {
            p.members.remove(&m.user_id);
            ProjectState::Live(p)
        }
        (ProjectState::Live(mut p), ProjectEvent::OwnerChanged(o)) => {
            p.members.insert(o.from, ProjectRole::Admin);
            p.members.insert(o.to, ProjectRole::Owner);
            p.owner_id = o.to;
            ProjectState::Live(p)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProjectRole::*;

    const OWNER: Uuid = Uuid::from_u128(1);
    const ADMIN: Uuid = Uuid::from_u128(2);
    const MEMBER: Uuid = Uuid::from_u128(3);
    const VIEWER: Uuid = Uuid::from_u128(4);
    const ADMIN2: Uuid = Uuid::from_u128(5);
    const MEMBER2: Uuid = Uuid::from_u128(6);
    const STRANGER: Uuid = Uuid::from_u128(9);

    fn team() -> ProjectState {
        let mut events = vec![ProjectEvent::Created(ProjectCreated {
            owner_id: OWNER,
            name: "Team".into(),
            description: String::new(),
        })];
        for (user_id, role) in [
            (ADMIN, Admin),
            (MEMBER, Member),
            (VIEWER, Viewer),
            (ADMIN2, Admin),
            (MEMBER2, Member),
        ] {
            events.push(ProjectEvent::MemberAdded(ProjectMemberAdded {
                user_id,
                role,
            }));
        }
        events.iter().fold(ProjectState::Absent, evolve)
    }

    fn grant(r: ProjectRole) -> GrantableRole {
        GrantableRole::parse(r).unwrap()
    }

    fn run(
        state: &ProjectState,
        actor: Uuid,
        action: ProjectAction,
    ) -> Result<usize, ProjectError> {
        decide(
            state,
            ProjectCommand {
                actor,
                action,
                max_members: 500,
            },
        )
        .map(|e| e.len())
    }

    fn forbidden(r: Result<usize, ProjectError>) -> bool {
        matches!(r, Err(ProjectError::Forbidden(_)))
    }

    /// The roles table: who may do what, each cell decided on a fresh team.
    #[test]
    fn the_role_matrix() {
        let actors = [OWNER, ADMIN, MEMBER, VIEWER];
        // (action, allowed for owner, admin, member, viewer)
        let rows: Vec<(&str, ProjectAction, [bool; 4])> = vec![
            (
                "rename",
                ProjectAction::Update {
                    name: Some(ProjectName::parse("New").unwrap()),
                    description: None,
                },
                [true, true, false, false],
            ),
            (
                "archive",
                ProjectAction::Archive,
                [true, true, false, false],
            ),
            ("delete", ProjectAction::Delete, [true, false, false, false]),
            (
                "transfer",
                ProjectAction::TransferOwnership { to: MEMBER2 },
                [true, false, false, false],
            ),
            (
                "add a member",
                ProjectAction::AddMember {
                    user_id: STRANGER,
                    role: grant(Member),
                },
                [true, true, false, false],
            ),
            (
                "add an admin",
                ProjectAction::AddMember {
                    user_id: STRANGER,
                    role: grant(Admin),
                },
                [true, false, false, false],
            ),
            (
                "member → viewer",
                ProjectAction::ChangeRole {
                    user_id: MEMBER2,
                    role: grant(Viewer),
                },
                [true, true, false, false],
            ),
            (
                "promote to admin",
                ProjectAction::ChangeRole {
                    user_id: MEMBER2,
                    role: grant(Admin),
                },
                [true, false, false, false],
            ),
            (
                "demote an admin",
                ProjectAction::ChangeRole {
                    user_id: ADMIN2,
                    role: grant(Member),
                },
                [true, false, false, false],
            ),
            (
                "remove a member",
                ProjectAction::RemoveMember { user_id: MEMBER2 },
                [true, true, false, false],
            ),
            (
                "remove an admin",
                ProjectAction::RemoveMember { user_id: ADMIN2 },
                [true, false, false, false],
            ),
        ];
        for (name, action, allowed) in rows {
            for (actor, allowed) in actors.iter().zip(allowed) {
                let got = run(&team(), *actor, action.clone());
                if allowed {
                    assert_eq!(got, Ok(1), "{name} by {actor}");
                } else {
                    assert!(forbidden(got.clone()), "{name} by {actor}: {got:?}");
                }
                assert_eq!(
                    run(&team(), STRANGER, action.clone()),
                    Err(ProjectError::NotFound),
                    "{name} by a stranger"
                );
            }
        }
    }

    #[test]
    fn leaving_and_the_owner() {
        for who in [ADMIN, MEMBER, VIEWER] {
            assert_eq!(
                run(&team(), who, ProjectAction::RemoveMember { user_id: who }),
                Ok(1)
            );
        }
        assert_eq!(
            run(
                &team(),
                OWNER,
                ProjectAction::RemoveMember { user_id: OWNER }
            ),
            Err(ProjectError::OwnerCannotLeave)
        );
        assert!(forbidden(run(
            &team(),
            ADMIN,
            ProjectAction::RemoveMember { user_id: OWNER }
        )));
        assert_eq!(
            run(
                &team(),
                OWNER,
                ProjectAction::ChangeRole {
                    user_id: OWNER,
                    role: grant(Admin)
                }
            ),
            Err(ProjectError::OwnerRole)
        );
        assert!(GrantableRole::parse(Owner).is_err());
        assert_eq!(
            run(
                &team(),
                OWNER,
                ProjectAction::RemoveMember { user_id: STRANGER }
            ),
            Err(ProjectError::NoSuchMember)
        );
        assert_eq!(
            run(
                &team(),
                OWNER,
                ProjectAction::TransferOwnership { to: STRANGER }
            ),
            Err(ProjectError::TransferToNonMember)
        );
        assert_eq!(
            run(
                &team(),
                ADMIN,
                ProjectAction::AddMember {
                    user_id: MEMBER,
                    role: grant(Viewer)
                }
            ),
            Err(ProjectError::AlreadyMember)
        );
    }

    #[test]
    fn transfer_keeps_the_old_owner_as_admin() {
        let events = decide(
            &team(),
            ProjectCommand {
                actor: OWNER,
                action: ProjectAction::TransferOwnership { to: MEMBER },
                max_members: 500,
            },
        )
        .unwrap();
        let state = events.iter().fold(team(), evolve);
        let p = state.live().unwrap();
        assert_eq!(p.owner_id, MEMBER);
        assert_eq!(p.role_of(MEMBER), Some(Owner));
        assert_eq!(p.role_of(OWNER), Some(Admin));
        // And the new owner now may delete; the old one may not.
        assert_eq!(run(&state, MEMBER, ProjectAction::Delete), Ok(1));
        assert!(forbidden(run(&state, OWNER, ProjectAction::Delete)));
    }

    #[test]
    fn no_ops_bounds_and_deletion() {
        assert_eq!(run(&team(), ADMIN, ProjectAction::Unarchive), Ok(0));
        let archived = evolve(team(), &ProjectEvent::Archived(ProjectArchived {}));
        assert_eq!(run(&archived, ADMIN, ProjectAction::Archive), Ok(0));
        assert_eq!(run(&archived, ADMIN, ProjectAction::Unarchive), Ok(1));
        assert_eq!(
            run(
                &team(),
                OWNER,
                ProjectAction::ChangeRole {
                    user_id: MEMBER,
                    role: grant(Member)
                }
            ),
            Ok(0)
        );
        let full = decide(
            &team(),
            ProjectCommand {
                actor: OWNER,
                action: ProjectAction::AddMember {
                    user_id: STRANGER,
                    role: grant(Member),
                },
                max_members: 6,
            },
        );
        assert_eq!(full, Err(ProjectError::MemberLimit { cap: 6 }));
        let deleted = evolve(team(), &ProjectEvent::Deleted(ProjectDeleted {}));
        assert_eq!(
            run(&deleted, OWNER, ProjectAction::Archive),
            Err(ProjectError::NotFound)
        );
        assert!(ProjectName::parse("  ").is_err());
        assert!(ProjectName::parse("a\nb").is_err());
        assert!(ProjectName::parse(&"x".repeat(101)).is_err());
        assert!(ProjectName::parse(&"x".repeat(100)).is_ok());
    }
}
