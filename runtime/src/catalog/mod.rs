//! The catalog of Open edX events: the 72 event types that openedx-events 11.2.0 can put on the
//! event bus, as typed Rust structs.
//!
//! Modules follow the architecture subdomains of openedx-events (`openedx_events.<subdomain>`).
//! Each module holds the data types of its subdomain (named like the Python attrs classes, since
//! those names are the Avro record names on the wire) and one struct per event type (named after
//! the Python signal in CamelCase, e.g. `XBLOCK_PUBLISHED` becomes
//! [`content_authoring::XBlockPublished`]).
//!
//! Not in the catalog: the three signals that openedx-events declares unfit for the event bus
//! (`KNOWN_UNSERIALIZABLE_SIGNALS`): `COURSE_CERTIFICATE_CONFIG_CHANGED` and
//! `COURSE_CERTIFICATE_CONFIG_DELETED` (their data carries a binary file object) and
//! `EXTERNAL_GRADER_SCORE_SUBMITTED`. No wire schema exists for them.

pub mod analytics;
pub mod authz;
pub mod content_authoring;
pub mod enterprise;
pub mod learning;

use crate::event::OpenEdxEvent;

/// The type string of every catalog event, for the build-time "did you mean" of
/// `producer_config!` (a constant: the check that uses it runs in constant evaluation).
///
/// ```
/// use openedx_events::catalog::EVENT_TYPES;
/// assert_eq!(EVENT_TYPES.len(), 72);
/// assert!(EVENT_TYPES.contains(&"org.openedx.content_authoring.xblock.published.v1"));
/// ```
pub const EVENT_TYPES: &[&str] = &[
    <analytics::TrackingEventEmitted as OpenEdxEvent>::EVENT_TYPE,
    <authz::RoleAssignmentCreated as OpenEdxEvent>::EVENT_TYPE,
    <authz::RoleAssignmentDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::CourseCatalogInfoChanged as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::XBlockCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::XBlockUpdated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::XBlockPublished as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::XBlockDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::XBlockDuplicated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::CourseCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::ContentLibraryCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::ContentLibraryUpdated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::ContentLibraryDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryBlockCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryBlockUpdated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryBlockDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryBlockPublished as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::ContentObjectAssociationsChanged as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::ContentObjectTagsChanged as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryCollectionCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryCollectionUpdated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryCollectionDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryContainerCreated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryContainerUpdated as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryContainerDeleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::LibraryContainerPublished as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::CourseImportCompleted as OpenEdxEvent>::EVENT_TYPE,
    <content_authoring::CourseRerunCompleted as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::SubsidyRedeemed as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::SubsidyRedemptionReversed as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::LedgerTransactionCreated as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::LedgerTransactionCommitted as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::LedgerTransactionFailed as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::LedgerTransactionReversed as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::LearnerCreditCourseEnrollmentRevoked as OpenEdxEvent>::EVENT_TYPE,
    <enterprise::EnterpriseGroupDeleted as OpenEdxEvent>::EVENT_TYPE,
    <learning::StudentRegistrationCompleted as OpenEdxEvent>::EVENT_TYPE,
    <learning::SessionLoginCompleted as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseEnrollmentCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseEnrollmentChanged as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseUnenrollmentCompleted as OpenEdxEvent>::EVENT_TYPE,
    <learning::CertificateCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::ProgramCertificateAwarded as OpenEdxEvent>::EVENT_TYPE,
    <learning::CertificateChanged as OpenEdxEvent>::EVENT_TYPE,
    <learning::CertificateRevoked as OpenEdxEvent>::EVENT_TYPE,
    <learning::ProgramCertificateRevoked as OpenEdxEvent>::EVENT_TYPE,
    <learning::CohortMembershipChanged as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseDiscussionsChanged as OpenEdxEvent>::EVENT_TYPE,
    <learning::PersistentGradeSummaryChanged as OpenEdxEvent>::EVENT_TYPE,
    <learning::XBlockSkillVerified as OpenEdxEvent>::EVENT_TYPE,
    <learning::UserNotificationRequested as OpenEdxEvent>::EVENT_TYPE,
    <learning::ExamAttemptSubmitted as OpenEdxEvent>::EVENT_TYPE,
    <learning::ExamAttemptRejected as OpenEdxEvent>::EVENT_TYPE,
    <learning::ExamAttemptVerified as OpenEdxEvent>::EVENT_TYPE,
    <learning::ExamAttemptErrored as OpenEdxEvent>::EVENT_TYPE,
    <learning::ExamAttemptReset as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseAccessRoleAdded as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseAccessRoleRemoved as OpenEdxEvent>::EVENT_TYPE,
    <learning::ForumThreadCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::ForumThreadResponseCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::ForumResponseCommentCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::CourseNotificationRequested as OpenEdxEvent>::EVENT_TYPE,
    <learning::OraSubmissionCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::CoursePassingStatusUpdated as OpenEdxEvent>::EVENT_TYPE,
    <learning::CcxCoursePassingStatusUpdated as OpenEdxEvent>::EVENT_TYPE,
    <learning::BadgeAwarded as OpenEdxEvent>::EVENT_TYPE,
    <learning::BadgeRevoked as OpenEdxEvent>::EVENT_TYPE,
    <learning::IdvAttemptCreated as OpenEdxEvent>::EVENT_TYPE,
    <learning::IdvAttemptPending as OpenEdxEvent>::EVENT_TYPE,
    <learning::IdvAttemptApproved as OpenEdxEvent>::EVENT_TYPE,
    <learning::IdvAttemptDenied as OpenEdxEvent>::EVENT_TYPE,
    <learning::LtiProviderLaunchSuccess as OpenEdxEvent>::EVENT_TYPE,
];

/// The hidden aliases that name each catalog event by its type string, so that
/// `producer_config!` finds catalog events by type string without imports.
#[doc(hidden)]
#[allow(ambiguous_glob_reexports)] // only the aliases are used, and they are unique
pub mod __aliases {
    pub use super::analytics::*;
    pub use super::authz::*;
    pub use super::content_authoring::*;
    pub use super::enterprise::*;
    pub use super::learning::*;
}

#[cfg(test)]
mod tests {
    /// `EVENT_TYPES` lists every event of the catalog, and nothing else.
    #[test]
    fn event_types_are_the_catalog() {
        let mut listed: Vec<&str> = super::EVENT_TYPES.to_vec();
        listed.sort_unstable();
        let mut registered: Vec<&str> = crate::registry::events()
            .into_iter()
            .filter(|d| d.rust_type.starts_with("openedx_events::catalog::"))
            .map(|d| d.event_type)
            .collect();
        registered.sort_unstable();
        assert_eq!(listed, registered);
    }
}
